"""OpenAI's Batch API: uploaded files, batches of requests over them, and the runner that answers
their lines at a lower priority than interactive requests, resuming after a restart."""
