"""Run the default scenario by hand: ``python -m tests.xapisim [--config-out FILE]``.

Serves until Ctrl-C on wall time, prints the pool URLs and credentials, and writes a ferry config
so ``ferry --config FILE migrate web-1 --to xs-b1`` drives the XenAPI path against it.
"""

from __future__ import annotations

import argparse
import copy
import threading
from pathlib import Path

from tests.xapisim.scenario import DEFAULT_SCENARIO
from tests.xapisim.server import PASSWORD_ENV, XapiSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.xapisim", description=__doc__)
    parser.add_argument("--config-out", metavar="FILE", help="write a ferry config (TOML) here")
    parser.add_argument(
        "--port-base", type=int, default=0, help="first pool's port (+1 per pool); 0 = ephemeral"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="multiply the transfer speeds")
    args = parser.parse_args(argv)

    scenario = copy.deepcopy(DEFAULT_SCENARIO)
    for key in ("migrate_speed_mib_s", "storage_speed_mib_s"):
        scenario[key] = scenario[key] * args.speed
    sim = XapiSimulator(scenario)
    ports = (
        {p: args.port_base + i for i, p in enumerate(scenario["pools"])} if args.port_base else None
    )
    sim.start(ports)
    try:
        for pool in scenario["pools"]:
            print(f"{pool}: {sim.url(pool)}")
        print(f"username: {sim.username}")
        print(f"export {PASSWORD_ENV}='{sim.password}'")
        if args.config_out:
            Path(args.config_out).write_text(sim.ferry_config())
            print(f"ferry config: {args.config_out}  (ferry --config {args.config_out} hosts)")
        print("serving; Ctrl-C stops", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
