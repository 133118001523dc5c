"""Ask a Ray cluster's head (its GCS) whether it answers, and whether it takes this driver's token,
in seconds - `ray.init` itself retries an address that does not answer for minutes. Run as its
own process (`python -m sweep.probe HOST:PORT`, short Ray time-outs in its environment), so that
its Ray settings and the token Ray caches stay out of the driver; prints one JSON line:

    {"answers": true, "token": "taken" | "refused" | "none", "open": true | false, "said": "..."}

`open`: the cluster also took a made-up token - it runs without token authentication.
"""

from __future__ import annotations

import json
import os
import secrets
import sys

# Ray's own settings, for this process only: give up on a silent address in about 5 s
FAST = {"RAY_py_gcs_connect_timeout_s": "3", "RAY_gcs_rpc_server_reconnect_timeout_s": "2",
        "RAY_gcs_rpc_server_connect_timeout_s": "2"}


def ask(address: str) -> tuple[bool, str]:
    """(answered, what Ray said): one read of the GCS's key-value store."""
    from ray._raylet import AuthenticationTokenLoader, GcsClient
    from ray.exceptions import AuthenticationError, RayError

    AuthenticationTokenLoader.instance().reset_cache()
    try:
        GcsClient(address=address).internal_kv_get(b"session_name", b"session", timeout=5)
        return True, ""
    except AuthenticationError as exc:
        return True, f"refused: {str(exc).split('.')[0]}"
    except (RayError, OSError) as exc:
        return False, str(exc).split(". ")[0]


def has_token() -> bool:
    """Whether this process has a Ray token where Ray looks for one (its variables, ~/.ray/auth_token)."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    try:
        with open(path) as f:
            return bool(f.read().strip())
    except OSError:
        return False


def main(address: str) -> dict:
    os.environ["RAY_AUTH_MODE"] = "token"
    mine = {k: os.environ.pop(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH") if k in os.environ}
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)  # a token the cluster cannot know
    answers, said = ask(address)
    if not answers:
        return {"answers": False, "token": "none", "open": False, "said": said}
    is_open = not said
    os.environ.pop("RAY_AUTH_TOKEN")
    os.environ.update(mine)
    if not has_token():
        return {"answers": True, "token": "none", "open": is_open, "said": ""}
    answers, said = ask(address)
    return {"answers": answers, "token": "refused" if said.startswith("refused") else "taken", "open": is_open,
            "said": said}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
