"""OpenAI's Files and Batch API bodies (the openai SDK's FileObject, Batch, their lists), and
/v1/performance's reply."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from heylook.wire.fields import Body, example

BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
# The routes a batch may name (heylook.batches.lines.ENDPOINTS).
BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


class FileObject(BaseModel):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["processed"]
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: bool


class BatchCreateRequest(Body):
    model_config = example(
        {"input_file_id": "file-abc123", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    )
    input_file_id: str
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    # OpenAI's bounds: 16 pairs, keys of at most 64 characters, values of at most 512.
    metadata: (
        dict[
            Annotated[str, StringConstraints(max_length=64)],
            Annotated[str, StringConstraints(max_length=512)],
        ]
        | None
    ) = Field(default=None, max_length=16)


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None
    line: int | None


class BatchErrors(BaseModel):
    object: Literal["list"]
    data: list[BatchError]


class BatchRequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class Batch(BaseModel):
    id: str
    object: Literal["batch"]
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None


class BatchList(BaseModel):
    object: Literal["list"]
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ModelPerformance(BaseModel):
    model: str
    prompt_tokens: float = Field(description="Prompt tokens evaluated since the server started.")
    completion_tokens: float = Field(description="Tokens generated since the server started.")
    tokens_per_second: float | None = Field(
        description="Generation speed: one over the mean time between tokens."
    )
    time_to_first_token_p50: float | None = Field(description="Seconds, from the histogram's buckets.")
    time_to_first_token_p95: float | None
    time_to_first_token_mean: float | None
    active_requests: float = Field(description="Requests holding the model (generating or queued).")
    queued_requests: float = Field(description="Requests waiting for the model to be free.")


class BatchProgress(BaseModel):
    id: str
    status: BatchStatus
    request_counts: BatchRequestCounts


class Performance(BaseModel):
    models: list[ModelPerformance]
    batches: list[BatchProgress] = Field(description="The batches not yet finished, oldest first.")
