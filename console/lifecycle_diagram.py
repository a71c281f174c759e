"""The lifecycle of docs/architecture.md §4 as a diagram: every stage, the versions in each, the
live one marked by a thick border, a dark fill *and* the word "live" (colour is never the only
cue). Geometry only; ``templates/console/_lifecycle.svg.html`` draws it as inline SVG."""

from __future__ import annotations

from dataclasses import dataclass, field

from governance.models import SERVING_STAGES, Stage

BOX_W, BOX_H = 160, 58
WIDTH, HEIGHT = 1040, 330
SERVING = "serving"  # the group of serving stages, a node of its own for start_rollback/retire

# Top-left corners; the serving stages sit inside one group box (at most one version serves).
POSITIONS: dict[str, tuple[int, int]] = {
    Stage.DEVELOPMENT: (20, 40),
    Stage.VALIDATION: (220, 40),
    Stage.STAGING: (420, 40),
    Stage.PRODUCTION: (620, 40),
    Stage.MONITORING: (840, 40),
    Stage.RETRAINING: (620, 136),
    Stage.DEGRADED: (840, 136),
    Stage.RETIRED: (220, 252),
    Stage.ROLLBACK: (620, 252),
}
GROUP = (600, 12, 420, 200)  # x, y, w, h of the serving group

# (from, to, transition) as in the table of docs/architecture.md §4.
EDGES: tuple[tuple[str, str, str], ...] = (
    (Stage.DEVELOPMENT, Stage.VALIDATION, "submit for validation"),
    (Stage.VALIDATION, Stage.DEVELOPMENT, "validation failed"),
    (Stage.VALIDATION, Stage.STAGING, "approve for staging"),
    (Stage.STAGING, Stage.VALIDATION, "shadow failed"),
    (Stage.STAGING, Stage.PRODUCTION, "promote"),
    (Stage.PRODUCTION, Stage.MONITORING, "verified serving"),
    (Stage.PRODUCTION, Stage.DEGRADED, "high or critical alert"),
    (Stage.MONITORING, Stage.DEGRADED, "high or critical alert"),
    (Stage.DEGRADED, Stage.MONITORING, "resolved"),
    (Stage.DEGRADED, Stage.RETRAINING, "approve retraining"),
    (SERVING, Stage.ROLLBACK, "start rollback"),
    (Stage.ROLLBACK, Stage.RETIRED, "rollback complete"),
    (SERVING, Stage.RETIRED, "retire"),
    (Stage.RETIRED, Stage.PRODUCTION, "restore"),
)
MAX_LISTED = 3
# Edges whose meaning is not obvious from their place get a written label: (dx, dy) from the
# middle of the line, so the two long diagonals' labels do not collide.
CAPTIONS = {"restore": (-18, -8), "retire": (16, 22), "start rollback": (48, 6)}


@dataclass
class Box:
    stage: str
    label: str
    x: int
    y: int
    versions: list[str]
    live: bool
    text: str  # the versions line as drawn

    @property
    def cx(self) -> float:
        return self.x + BOX_W / 2

    @property
    def css(self) -> str:
        return "lc-live" if self.live else ("lc-used" if self.versions else "lc-empty")


@dataclass
class Edge:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    caption: tuple[float, float] | None = None  # where the label is written, if it is

    @property
    def cx(self) -> float:
        return self.caption[0] if self.caption else 0

    @property
    def cy(self) -> float:
        return self.caption[1] if self.caption else 0


@dataclass
class Diagram:
    title: str
    desc: str
    boxes: list[Box]
    edges: list[Edge]
    group: tuple[int, int, int, int] = GROUP
    width: int = WIDTH
    height: int = HEIGHT
    box_w: int = BOX_W
    box_h: int = BOX_H
    listed: list[tuple[str, list[str]]] = field(default_factory=list)


def _rect(node: str) -> tuple[float, float, float, float]:
    if node == SERVING:
        return GROUP
    x, y = POSITIONS[node]
    return x, y, BOX_W, BOX_H


def _clip(dx: float, dy: float, rect) -> float:
    """How far along (dx, dy) from the rectangle's centre the line leaves it (0..1)."""
    _, _, w, h = rect
    limits = []
    if dx:
        limits.append((w / 2) / abs(dx))
    if dy:
        limits.append((h / 2) / abs(dy))
    return min(limits) if limits else 0.0


def _edge(a: str, b: str, label: str, offset: float) -> Edge:
    ax, ay, aw, ah = _rect(a)
    bx, by, bw, bh = _rect(b)
    x1, y1, x2, y2 = ax + aw / 2, ay + ah / 2, bx + bw / 2, by + bh / 2
    dx, dy = x2 - x1, y2 - y1
    length = (dx * dx + dy * dy) ** 0.5
    nx, ny = -dy / length * offset, dx / length * offset  # a parallel lane for return edges
    start = _clip(dx, dy, _rect(a))
    end = 1 - _clip(-dx, -dy, _rect(b))
    gap = 4 / length  # a little air between arrow and box
    edge = Edge(
        round(x1 + dx * (start + gap) + nx, 1),
        round(y1 + dy * (start + gap) + ny, 1),
        round(x1 + dx * (end - gap * 1.5) + nx, 1),
        round(y1 + dy * (end - gap * 1.5) + ny, 1),
        label,
    )
    if label in CAPTIONS:
        ox, oy = CAPTIONS[label]
        edge.caption = ((edge.x1 + edge.x2) / 2 + ox, (edge.y1 + edge.y2) / 2 + oy)
    return edge


def lifecycle_diagram(
    model_name: str, stages: list[tuple[str, str, str]], *, live: tuple[str, str] | None
) -> Diagram:
    """``stages``: (version, stage, archive) newest first; ``live``: (version, stage) or None."""
    by_stage: dict[str, list[str]] = {s: [] for s in Stage}
    for version, stage, archive in stages:
        suffix = (
            {"warm": " (warm)", "cold": " (cold)"}.get(archive, "")
            if stage == Stage.RETIRED
            else ""
        )
        by_stage.setdefault(stage, []).append(version + suffix)
    boxes = []
    for stage in Stage:
        versions = by_stage[stage]
        is_live = live is not None and live[1] == stage
        shown = versions[:MAX_LISTED]
        text = ", ".join(f"{v} live" if is_live and live and v == live[0] else v for v in shown)
        if len(versions) > MAX_LISTED:
            text += f" +{len(versions) - MAX_LISTED} more"
        x, y = POSITIONS[stage]
        boxes.append(Box(stage, Stage(stage).label, x, y, versions, is_live, text or "no version"))
    pairs = {(a, b) for a, b, _ in EDGES}
    edges = [_edge(a, b, label, 7 if (b, a) in pairs else 0) for a, b, label in EDGES]
    parts = []
    if live is not None:
        parts.append(f"Version {live[0]} is live, in stage {Stage(live[1]).label}.")
    else:
        parts.append("No version is live.")
    for stage in Stage:
        if by_stage[stage]:
            parts.append(f"{Stage(stage).label}: {', '.join(by_stage[stage])}.")
    serving = ", ".join(Stage(s).label for s in Stage if s in SERVING_STAGES)
    parts.append(
        "Stages in order: development, validation, staging, production, monitoring; "
        f"the serving stages ({serving}) may go to rollback or retired; a retired version in warm "
        "standby may be restored to production."
    )
    return Diagram(
        title=f"Lifecycle of {model_name}",
        desc=" ".join(parts),
        boxes=boxes,
        edges=edges,
        listed=[(Stage(s).label, by_stage[s]) for s in Stage],
    )
