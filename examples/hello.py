"""Hello, Warren: a sync and an async function, run in containers behind RabbitMQ.

Run it with ``./dev demo`` (or ``python examples/hello.py`` once set up). No engine
needs to be running: ``app.run()`` starts one for the duration of the script.
"""

import asyncio

import warren

app = warren.App("hello")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function(max_inputs=10)
async def greet(name: str) -> str:
    await asyncio.sleep(0.01)
    return f"hello, {name}"


@app.function()
def fail(x: int) -> int:
    raise ValueError(f"bad x: {x}")


async def concurrently() -> list[str]:
    return list(await asyncio.gather(*(greet.remote.aio(n) for n in ("ada", "grace", "alan"))))


if __name__ == "__main__":
    with app.run():
        print("square.remote(7) =", square.remote(7))
        print("square.local(7)  =", square.local(7))
        print("greetings:", asyncio.run(concurrently()))
        try:
            fail.remote(3)
        except ValueError as exc:
            print("fail.remote(3) raised ValueError:", exc)
