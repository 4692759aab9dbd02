"""Every option of ``vllmd``, spelled once (flag, environment variable, default, groups), and the
names of the files in the folders they name.

:mod:`vllmd.settings` types and parses these (its fields carry them, and the command line's lists
derive from their groups); :mod:`vllmd.early` reads the volumes' spellings before anything else is
imported. So this module imports nothing: it costs nothing to the first milliseconds of ``run``.
"""

from __future__ import annotations

VOLUMES = "volumes"
"""The folders every command that reads the volumes takes."""
RUN = "run"
"""What ``vllmd run`` takes beyond the volumes."""
DEMO = "demo"
"""What ``vllmd demo`` takes."""
DETECT = "detect"
"""What the commands that detect the hardware take."""

STORE_FILE = "store.json"
"""The serve arguments and the selection, in the data volume."""
HEALTH_FILE = "health.json"
"""What the daemon last said about its health, in the runtime folder."""


class Spelling:
    """How one option is written: ``--flag VALUE``, else ``$ENV``, else ``default`` (as text).

    Args:
        flag: The command-line flag (a ``--no-`` flag switches a default-true option off).
        env: The environment variable.
        default: The default, as the environment would spell it.
        help: What the option does, for ``--help``.
        metavar: The value's name in ``--help`` (None for a switch, or where the parser names it).
        groups: The option lists it belongs to (:data:`VOLUMES`, :data:`RUN`, ...).
    """

    __slots__ = ("default", "env", "flag", "groups", "help", "metavar")

    def __init__(
        self,
        flag: str,
        env: str,
        default: str,
        help: str,
        metavar: str | None = None,
        groups: tuple[str, ...] = (),
    ) -> None:
        self.flag = flag
        self.env = env
        self.default = default
        self.help = help
        self.metavar = metavar
        self.groups = groups

    def __repr__(self) -> str:
        return f"Spelling({self.flag!r}, {self.env!r}, {self.default!r})"


DATA = Spelling("--data", "VLLMD_DATA", "/data", "data volume", "DIR", (VOLUMES, DEMO))
PUBLIC = Spelling("--public", "VLLMD_PUBLIC", "/public", "public volume", "DIR", (VOLUMES, DEMO))
RUN_DIR = Spelling(
    "--run-dir", "VLLMD_RUN_DIR", "/run/vllmd", "runtime folder", "DIR", (VOLUMES, DEMO)
)
VLLM = Spelling("--vllm", "VLLMD_VLLM", "vllm", "the vLLM program", "PROGRAM", (RUN,))
HOST = Spelling("--host", "VLLMD_HOST", "0.0.0.0", "vLLM's listen host", "HOST", (RUN,))
PORT = Spelling("--port", "VLLMD_PORT", "8000", "vLLM's listen port", "PORT", (RUN, DEMO))
LOADING_GRACE = Spelling(
    "--loading-grace",
    "VLLMD_LOADING_GRACE",
    "2100",
    "seconds vLLM may take to come up before health says failure",
    "S",
    (RUN,),
)
LOADING_CAP = Spelling(
    "--loading-cap",
    "VLLMD_LOADING_CAP",
    "14400",
    "hard cap in seconds on loading while a download keeps progressing",
    "S",
    (RUN,),
)
STOP_TIMEOUT = Spelling(
    "--stop-timeout",
    "VLLMD_STOP_TIMEOUT",
    "30",
    "seconds between SIGTERM and SIGKILL when stopping vLLM",
    "S",
    (RUN,),
)
DRAIN_TIMEOUT = Spelling(
    "--drain-timeout",
    "VLLMD_DRAIN_TIMEOUT",
    "5",
    "seconds vLLM may spend finishing in-flight requests on a planned stop (its "
    "--shutdown-timeout); the stop timeout counts from the end of it",
    "S",
    (RUN,),
)
VARIANT = Spelling("--variant", "VLLMD_VARIANT", "cpu", "image variant", None, (RUN, DETECT))
LDCONFIG = Spelling(
    "--no-ldconfig", "VLLMD_LDCONFIG", "true", "skip the ldconfig run at start", None, (RUN,)
)
FETCH = Spelling(
    "--no-fetch",
    "VLLMD_FETCH",
    "true",
    "leave a hub model's download to vLLM (by default vllmd fetches it first, while the old "
    "model serves, and then launches vLLM offline)",
    None,
    (RUN,),
)
LOG_FORMAT = Spelling(
    "--log-format", "VLLMD_LOG_FORMAT", "text", "log line format", None, (RUN, DEMO)
)
AUTH = Spelling(
    "--auth",
    "VLLMD_AUTH",
    "guard",
    "how vLLM checks the key: guard (live key, no restart on rotation) or flag (--api-key)",
    None,
    (RUN,),
)
WATCH_STEP = Spelling(
    "--watch-step-ms",
    "VLLMD_WATCH_STEP_MS",
    "30",
    "polling fallback only: how often watchfiles looks at what it collected",
    "MS",
    (RUN,),
)
