"""Draws the settlement soak's curve: settled payments/s against offered payments/s.

    python3 benches/load/plot_soak.py benches/results/soak-<date>.json benches/results/soak-<date>.png

Reads the JSON that benches/load/soak.mjs writes; needs matplotlib (pip install --user
matplotlib). The y = x line is "settles all it is offered"; the dashed line is the target.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display: the soak runs headless
import matplotlib.pyplot as plt  # noqa: E402


def main(json_path: str, png_path: str) -> None:
    with open(json_path, encoding="utf-8") as file:
        results = json.load(file)
    rows = sorted(results["rows"], key=lambda row: row["offered"])
    offered = [row["offered"] for row in rows]
    settled = [row["settledPerSecond"] for row in rows]
    served = [row["servedPerSecond"] for row in rows]
    target = results["target"]
    top = max(offered + settled + [target]) * 1.1

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    axes.plot([0, top], [0, top], color="grey", linewidth=1, label="y = x (settles all it is offered)")
    axes.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target: {target:,} settled/s")
    axes.plot(offered, served, marker="s", color="tab:green", alpha=0.6, label="served (200) /s")
    axes.plot(offered, settled, marker="o", color="tab:blue", linewidth=2, label="settled /s during the load")
    for x, y in zip(offered, settled):
        axes.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("offered paid requests /s")
    axes.set_ylabel("payments /s")
    run = results["run"]
    axes.set_title(
        f"Settlement soak {results['started'][:10]}: {run['blockSeconds']} s blocks, "
        f"{run['blockGasLimit'] / 1e6:.0f}M gas, {run['seconds'] / 60:g} min per rate",
        fontsize=10,
    )
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(png_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_soak.py RESULTS.json OUT.png")
    main(sys.argv[1], sys.argv[2])
