"""What the user sees of a sweep: a bar of trials done / total, a line per trial as it lands (or
fails), and at the end the table comparing the sweep's experiments."""

from __future__ import annotations

from tqdm import tqdm


class Progress:
    """The bar (on a terminal only) and the per-trial lines, on `stream`."""

    def __init__(self, total: int, stream, bits: str = "") -> None:
        self.total, self.done, self.stream, self.bits = total, 0, stream, bits  # bits: this machine's, pinned
        self.bar = tqdm(total=total, desc="sweep: trials", unit="trial", file=stream, disable=None, leave=False,
                        dynamic_ncols=True)

    def say(self, line: str) -> None:
        tqdm.write(f"sweep: {line}", file=self.stream)

    def trial(self, line: str) -> None:
        """A trial is over: its line, counted, and the bar one step on."""
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {line}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def accuracy(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def table(rows: list[dict], keys: list[str]) -> str:
    """Experiment, the swept params, the test accuracy and loss, where it ran, what happened: one row a point."""
    head = ["Experiment", *keys, "accuracy", "loss", "ran on", "state"]  # as dvc metrics show names them
    body = [[r["name"], *(r["values"].get(k, "") for k in keys), accuracy(r.get("accuracy")), accuracy(r.get("loss")),
             r.get("node") or "-", r["state"]] for r in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(head, *body)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
