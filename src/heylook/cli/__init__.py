"""The heylook command line: one module per group of commands, all on one cyclopts app.

Exit codes: 0 done; 1 the operation failed (an unknown alias, no server, a download that failed);
2 the command line or models.yaml is wrong.
"""

from __future__ import annotations

import sys

from heylook.cli.common import CommandFailed, app, error_console


def main() -> None:
    # Importing the command modules registers their commands on `app`.
    from heylook.cli import aliases, hub, serve, status, talk  # noqa: F401
    from heylook.cli.common import quiet_libraries

    quiet_libraries()
    try:
        code = app(sys.argv[1:], result_action="return_value")
    except CommandFailed as failure:
        error_console.print(f"[red]error:[/red] {failure.message}", highlight=False, soft_wrap=True)
        code = failure.code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
