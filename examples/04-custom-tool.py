"""A custom tool in one file: look up an order, and cancel it only after the caller says yes.

    uv run examples/04-custom-tool.py

A tool is a typed async function: its signature and docstring are what the LLM sees, ``ctx``
gives it settings and a shared HTTP client, and ``ToolError`` carries a sentence the assistant
can say. ``confirm=`` marks a side effect: MindBot asks the caller first and runs it only after
their spoken yes. To give the tools to a live assistant (with an LLM that calls tools, e.g.
OpenAI), load this file and list it in a persona's ``tools:`` (the file's name is the group)::

    MINDBOT_TOOLS__MODULES='["examples/04-custom-tool.py"]'
    # personas/shop.yaml:  tools: [04-custom-tool, clock]

Run on its own, it plays the LLM's part: it calls the tools the way the pipeline does and prints
what the LLM would read back.
"""

import asyncio
import json

import httpx

from mindbot.tools import ToolContext, ToolError, ToolSession, ToolSettings, tool

ORDERS = {"A100": "shipped on Monday", "A200": "being packed"}


@tool(label="the order system")
async def order_status(ctx: ToolContext, order_id: str) -> dict:
    """Say where a customer's order is.

    Args:
        order_id: The order number, e.g. "A100".
    """
    order_id = order_id.strip().upper()
    if order_id not in ORDERS:
        raise ToolError(f"I couldn't find an order {order_id}.", kind="not_found")
    return {"order": order_id, "status": ORDERS[order_id]}


@tool(label="the order system", confirm=lambda a: f"cancel order {a['order_id'].upper()}")
async def cancel_order(ctx: ToolContext, order_id: str) -> dict:
    """Cancel a customer's order that has not shipped yet.

    Args:
        order_id: The order number.
    """
    order_id = order_id.strip().upper()
    if ORDERS.get(order_id) != "being packed":
        raise ToolError(f"Order {order_id} can't be cancelled any more.", kind="rejected")
    ORDERS[order_id] = "cancelled"
    return {"order": order_id, "status": "cancelled"}


async def main() -> None:
    async with httpx.AsyncClient() as http:
        session = ToolSession(
            [order_status, cancel_order], ToolContext(settings=ToolSettings(), http=http)
        )
        caller: list[str] = []

        async def llm_calls(name: str, arguments: dict) -> None:
            result = await session.invoke(name, arguments, user_turns=caller)
            print(f"LLM calls {name}({json.dumps(arguments)})\n  and reads {json.dumps(result)}")

        caller.append("Where is my order A100?")
        await llm_calls("order_status", {"order_id": "A100"})
        caller.append("Please cancel order A200.")
        await llm_calls("cancel_order", {"order_id": "A200"})
        await llm_calls("confirm_action", {})  # too early: the caller has not said yes
        caller.append("Yes, cancel it.")
        await llm_calls("confirm_action", {})
        print(f"Order A200 is now {ORDERS['A200']}.")


if __name__ == "__main__":
    asyncio.run(main())
