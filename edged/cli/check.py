"""`edged check`: is the local daemon ready? Asks its /readyz, for scripts and health gates."""

from typing import Annotated

import typer

from edged.cli.options import ConfigOpt, config_path, exits
from edged.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, ConfigError

# A wildcard listen address is reached through loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def check_ready(listen: str, timeout: float) -> tuple[int, str]:
    """(exit code, one line) from GET /readyz on ``listen``."""
    # Imported here, not at the top: start-up time (see edged/cli/__init__.py).
    import http.client

    from edged.config import split_host_port

    host, port = split_host_port(listen)
    host = _WILDCARDS.get(host, host)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/readyz")
        reply = conn.getresponse()
        body = reply.read(4096).decode(errors="replace").strip()
    except ConnectionRefusedError:
        return EXIT_UNAVAILABLE, f"no daemon listens on {listen}"
    except TimeoutError:
        return EXIT_FAILURE, f"the daemon on {listen} did not answer within {timeout:g}s"
    except (OSError, http.client.HTTPException) as exc:
        return EXIT_UNAVAILABLE, f"cannot ask {listen}: {exc}"
    finally:
        conn.close()
    if reply.status == 200:
        return EXIT_OK, f"ready ({listen})"
    return EXIT_FAILURE, f"not ready ({listen}, HTTP {reply.status}): {body}"


@exits
def check(
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.", min=0.1)] = 5.0,
) -> None:
    """Exit 0 if the local daemon is ready (its /readyz), 1 with the reason if not,
    69 if nothing listens on `[daemon] listen`, 78 if the config is bad or listen is off."""
    from edged.config import Config, load_config

    path = config_path(config)
    cfg = load_config(path) if path is not None else Config()
    listen = cfg.daemon.listen
    if not listen:
        raise ConfigError(f"{path or 'defaults'}: [daemon] listen is empty: the daemon "
                          "serves no /readyz to check")
    code, line = check_ready(listen, timeout)
    typer.echo(line if code == EXIT_OK else f"edged: {line}", err=code != EXIT_OK)
    raise typer.Exit(code)
