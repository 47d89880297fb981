"""The floor of lag.py: a bare asyncio ``loop.call_at`` timer in a process of its own.

Reads due times (epoch seconds, a JSON list) on stdin, arms one ``call_at`` per due time,
and when all have fired prints each one's lateness (``time.time()`` at the call minus the due
time, seconds) as a JSON list on stdout. Nothing but the standard library is imported.
"""

import asyncio
import json
import sys
import time


async def fire_all(dues: list[float]) -> list[float]:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    late: list[float] = []

    def fire(due: float) -> None:
        late.append(time.time() - due)
        if len(late) == len(dues):
            done.set_result(None)

    for due in dues:
        loop.call_at(loop.time() + (due - time.time()), fire, due)
    if dues:
        await done
    return late


def main() -> None:
    dues = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(fire_all(dues))), flush=True)


if __name__ == "__main__":
    main()
