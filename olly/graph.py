"""The target graph: dependency order, cycles, label selection and rendering."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from olly.config import ChartTarget, Target, Workspace
from olly.errors import OllyError


def suggest(label: str, known: list[str]) -> str:
    """A ``; did you mean ...?`` suffix with close matches, or an empty string."""
    import difflib  # only for the "did you mean" of an unknown label

    close = difflib.get_close_matches(label, known, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path (``a -> b -> a``), or None. Iterative depth-first search."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(deps):
        if start in state:
            continue
        state[start] = 1
        path, stack = [start], [iter(deps.get(start, []))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps.get(nxt, [])))
    return None


@dataclass
class Graph:
    targets: dict[str, Target]
    cwd: str = ""  # the current directory relative to the workspace root, when inside it
    @classmethod
    def of(cls, ws: Workspace) -> "Graph":
        graph = cls(ws.targets)
        graph.check_acyclic()
        return graph

    def deps(self, label: str) -> list[str]:
        return list(self.targets[label].depends_on)

    def dependents(self, label: str) -> list[str]:
        return sorted(t for t in self.targets if label in self.deps(t))

    def check_acyclic(self) -> None:
        """Raise with the full path (``a -> b -> a``) if any dependency cycle exists."""
        cycle = find_cycle({label: self.deps(label) for label in self.targets})
        if cycle:
            raise OllyError("dependency-cycle", "dependency cycle: " + " -> ".join(cycle))

    def order(self, labels: set[str] | None = None) -> list[str]:
        """Dependencies before dependents; ties broken by label for stable output.
        Iterative: a chain of thousands of targets must not hit the recursion limit."""
        wanted = set(self.targets) if labels is None else labels
        done: list[str] = []
        seen: set[str] = set()
        for start in sorted(wanted):
            if start in seen:
                continue
            seen.add(start)
            stack = [(start, iter(sorted(self.deps(start))))]
            while stack:
                node, deps = stack[-1]
                nxt = next(deps, None)
                if nxt is None:
                    stack.pop()
                    if node in wanted:
                        done.append(node)
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, iter(sorted(self.deps(nxt)))))
        return done

    def closure(self, labels: set[str]) -> set[str]:
        """``labels`` plus everything they transitively depend on."""
        out: set[str] = set()
        todo = list(labels)
        while todo:
            label = todo.pop()
            if label not in out:
                out.add(label)
                todo.extend(self.deps(label))
        return out

    def select(self, patterns: list[str]) -> list[str]:
        """Resolve label patterns (``apps/x``, ``apps/...``, ``...``) to the targets
        they name plus their dependencies, in build order. No patterns = everything."""
        if not patterns:
            return self.order()
        chosen: set[str] = set()
        for pattern in patterns:
            chosen |= self.match(pattern)
        return self.order(self.closure(chosen))

    def match(self, pattern: str) -> set[str]:
        """Targets a pattern names. Inside a subdirectory of the workspace a pattern is first
        read relative to it (``olly plan .`` in apps/web = apps/web; ``...`` = apps/web/...),
        then from the root; ``//apps/web`` is always from the root."""
        relative = self._relative(pattern)
        if relative is not None:
            try:
                return self._match(relative)
            except OllyError:
                pass  # e.g. `olly make apps/base` typed inside apps/web: from the root
        return self._match(pattern)

    def _relative(self, pattern: str) -> str | None:
        if not self.cwd or self.cwd == "." or pattern.startswith("//"):
            return None
        pat = pattern.rstrip("/")
        tail = pat.endswith("...")
        base = pat[: -len("...")].rstrip("/") if tail else pat
        joined = posixpath.normpath(posixpath.join(self.cwd, base or "."))
        if joined == "." or joined.startswith(".."):
            return "..." if tail and joined == "." else None
        return f"{joined}/..." if tail else joined

    def _match(self, pattern: str) -> set[str]:
        pat = pattern.removeprefix("//").removeprefix("./").rstrip("/")
        if pat in ("...", ""):
            return set(self.targets)
        if pat.endswith("/..."):
            prefix = pat[: -len("...")]
            found = {t for t in self.targets if t.startswith(prefix)}
            if not found:
                raise OllyError("unknown-target", f"pattern {pattern!r} matches no target{suggest(prefix, list(self.targets))}")
            return found
        if pat in self.targets:
            return {pat}
        named = sorted(t for t in self.targets if t.rsplit("/", 1)[-1] == pat)  # a bare `web` for apps/web
        hint = f"; did you mean {', '.join(named)}?" if named else suggest(pat, list(self.targets))
        raise OllyError("unknown-target", f"unknown target {pattern!r}{hint}")

    # -- rendering -------------------------------------------------------------

    def render(self, fmt: str, labels: list[str] | None = None, stale: set[str] | None = None) -> str:
        """``stale``: targets whose inputs changed since their last build (marked ``*``, red in
        dot, a ``stale`` class in mermaid, ``"stale": true`` in JSON)."""
        labels = labels or self.order()
        stale = stale or set()
        render = {"dot": self._dot, "mermaid": self._mermaid, "json": self._json}.get(fmt, self._text)
        return render(labels, stale)

    def _kind(self, label: str) -> str:
        return "chart" if isinstance(self.targets[label], ChartTarget) else "image"

    def edge_label(self, label: str, dep: str) -> str:
        """The values paths through which chart ``label`` receives image ``dep`` ("" for images)."""
        target = self.targets[label]
        if not isinstance(target, ChartTarget):
            return ""
        return ", ".join(sorted(path for path, image in target.images.items() if image == dep))

    def _text(self, labels: list[str], stale: set[str]) -> str:
        lines = []
        for label in labels:
            deps = [f"{d} ({self.edge_label(label, d)})" if self.edge_label(label, d) else d for d in sorted(self.deps(label))]
            arrow = f"  <- {', '.join(deps)}" if deps else ""
            mark = "*" if label in stale else " "
            lines.append(f"{self._kind(label):5} {mark} {label}{arrow}")
        if stale:
            lines.append("* = inputs changed since the last build (would build)")
        return "\n".join(lines)

    def _json(self, labels: list[str], stale: set[str]) -> str:
        import json

        nodes = [{"label": label, "kind": self._kind(label), "stale": label in stale} for label in labels]
        edges = [{"from": dep, "to": label, "values_paths": sorted(p for p, i in self.targets[label].images.items() if i == dep)
                  if isinstance(self.targets[label], ChartTarget) else []}
                 for label in labels for dep in sorted(self.deps(label)) if dep in labels]
        return json.dumps({"schema": 1, "nodes": nodes, "edges": edges}, indent=2, sort_keys=True)  # docs/json.md

    def _dot(self, labels: list[str], stale: set[str]) -> str:
        lines = ["digraph olly {", "  rankdir=LR;"]
        for label in labels:
            shape = "box" if self._kind(label) == "image" else "folder"
            extra = ', color=red, fontcolor=red, xlabel="stale"' if label in stale else ""
            lines.append(f'  "{label}" [shape={shape}{extra}];')
        for label in labels:
            for dep in sorted(self.deps(label)):
                paths = self.edge_label(label, dep)
                lines.append(f'  "{dep}" -> "{label}"' + (f' [label="{paths}"]' if paths else "") + ";")
        lines.append("}")
        return "\n".join(lines)

    def _mermaid(self, labels: list[str], stale: set[str]) -> str:
        ids = {label: f"t{i}" for i, label in enumerate(labels)}
        lines = ["graph LR"]
        for label in labels:
            open_, close = ("[", "]") if self._kind(label) == "image" else ("[(", ")]")
            lines.append(f'  {ids[label]}{open_}"{label}"{close}' + (":::stale" if label in stale else ""))
        for label in labels:
            for dep in sorted(self.deps(label)):
                if dep in ids:
                    paths = self.edge_label(label, dep)
                    lines.append(f"  {ids[dep]} -->" + (f'|"{paths}"|' if paths else "") + f" {ids[label]}")
        if stale:
            lines.append("  classDef stale stroke:#d00,stroke-width:2px")
        return "\n".join(lines)
