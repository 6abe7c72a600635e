"""A home's balance answer (GET /v1/balance) as tables for the terminal: the project, the user, the holds."""

from __future__ import annotations

from rich.table import Table


def balance_tables(answer: dict) -> list[Table]:
    """The project's allocation, held, spent and available; the user's own figures; each hold and how it ended."""
    project, user = answer["project"], answer["user"]
    figures = Table(title=f"project {project['name']} (micro-credits)")
    for column in ("allocation", "held", "spent", "available"):
        figures.add_column(column, justify="right")
    figures.add_row(*(f"{project[c]:,}" for c in ("allocation", "held", "spent", "available")))
    own = Table(title=f"{user.get('principal', 'you')}")
    own.add_column("held", justify="right")
    own.add_column("spent", justify="right")
    own.add_row(f"{user['held']:,}", f"{user['spent']:,}")
    holds = Table(title="your holds")
    for column in ("order", "centre"):
        holds.add_column(column)
    holds.add_column("amount", justify="right")
    holds.add_column("status")
    holds.add_column("price", justify="right")
    for hold in answer.get("holds", []):
        price = hold.get("price")
        holds.add_row(
            hold["order"][:18] + "…",
            hold["centre"],
            f"{hold['amount']:,}",
            hold["status"],
            "" if price is None else f"{price:,}",
        )
    return [figures, own, holds]
