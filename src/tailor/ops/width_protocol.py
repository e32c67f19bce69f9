"""The slimmable models' width protocol: `search_dim`, `channel_space`, `decode_wm`, `decode_ch`, `set_real_ch`.

Width dimensions are grouped by the text before their first dot ("stem", "stage2", "head", ...): that
grouping is the hierarchy of the seed's `channel_space`, `decode_wm` and `decode_ch`. Layers are the ops
with an elastic output (`out_dim`), in definition order; each reads an *op dimension*, which a space
dimension (its *knob*) drives. In a model built from `tailor.ops` the two are the same; a model whose ops
read other channel groups (`tailor.convert`) subclasses this protocol and overrides `knob`, `layer_count`
and `width_for`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tailor.errors import InvalidSubnetError
from tailor.space import Subnet, WidthDim

if TYPE_CHECKING:
    from tailor.ops.network import ElasticModel


def group_of(dim: str) -> str:
    """The hierarchy group of a width dimension: the text before its first dot."""
    return dim.split(".", 1)[0]


class WidthProtocol:
    """The width protocol of one model (see the module docstring); `ElasticModel` delegates to it."""

    #: What `set_real_ch`'s errors call the op dimension that tied layers share.
    tied = "dimension"

    def __init__(self, model: ElasticModel) -> None:
        self.model = model

    # -- the hooks of models whose ops read other dimensions than the space's --------------------------
    def knob(self, op_dim: str) -> str:
        """The space dimension driving the op dimension `op_dim`."""
        return op_dim

    def layer_count(self, op_dim: str, counts: dict[str, int]) -> int:
        """Channels of `op_dim` when the space dimensions run `counts` channels."""
        return counts[op_dim]

    def width_for(self, dim: WidthDim, wanted: dict[str, int]) -> float:
        """The width of space dimension `dim` under which its op dimensions run the `wanted` channels."""
        count = wanted.get(dim.name)
        valid = isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= dim.channels
        width = dim.width_of_channels(count) if valid else None  # type: ignore[arg-type]
        if width is None:
            raise InvalidSubnetError(f"set_real_ch: dimension {dim.name!r} cannot run {count!r} channels")
        return width

    # -- structure ---------------------------------------------------------------------------------------
    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, its width dimensions in space order) for every group."""
        groups: dict[str, list[str]] = {}
        for dim in self.model.space.widths:
            groups.setdefault(group_of(dim.name), []).append(dim.name)
        return list(groups.items())

    def nest(self, values: dict[str, Any]) -> list[Any]:
        """Per-dimension values arranged as the hierarchy: a lone undotted dimension is a scalar."""
        return [values[names[0]] if names == [group] else [values[n] for n in names] for group, names in self.groups()]

    def flatten(self, nested: Any, what: str) -> dict[str, Any]:
        """Inverse of `nest`: hierarchical values -> {dimension: value}, shape-checked."""
        groups = self.groups()
        if not isinstance(nested, (list, tuple)) or len(nested) != len(groups):
            raise InvalidSubnetError(f"{what}: expected {len(groups)} groups, got {nested!r:.200}")
        flat: dict[str, Any] = {}
        for (group, dims), item in zip(groups, nested):
            items = [item] if dims == [group] else item
            if not isinstance(items, (list, tuple)) or len(items) != len(dims):
                raise InvalidSubnetError(f"{what}: group {group!r} needs {len(dims)} value(s), got {item!r:.200}")
            flat.update(zip(dims, items))
        return flat

    def layer_dims(self) -> list[tuple[str, str, str]]:
        """(group, layer name, op dimension) of every op whose output channels are elastic."""
        layers = []
        for name, module in self.model.elastic_layers():
            out_dim = getattr(module, "out_dim", None)
            if out_dim is not None:
                layers.append((group_of(self.knob(out_dim)), name, out_dim))
        return layers

    # -- the protocol --------------------------------------------------------------------------------------
    def channel_space(self) -> list[Any]:
        """Full channel count of every width dimension, grouped per stage (the seed's `channel_space`)."""
        return self.nest({d.name: d.channels for d in self.model.space.widths})

    def decode_wm(self, wm: Any) -> list[Any]:
        """Flat width multipliers (len `search_dim`) -> hierarchical channel counts, one per dimension."""
        space = self.model.space
        return self.nest(space.channels(space.from_wm(list(wm))))

    def decode_ch(self, ch: Any) -> list[Any]:
        """Hierarchical per-dimension channel counts (`decode_wm`'s output) -> per-layer output counts."""
        counts = self.flatten(ch, "decode_ch")
        for dim in self.model.space.widths:
            count = counts[dim.name]
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= dim.channels:
                raise InvalidSubnetError(f"decode_ch: dimension {dim.name!r} = {count!r} is not in [1, {dim.channels}]")
        per_group: dict[str, list[int]] = {group: [] for group, _ in self.groups()}
        for group, _, op_dim in self.layer_dims():
            per_group[group].append(self.layer_count(op_dim, counts))
        return [per_group[group] for group, _ in self.groups()]

    def set_real_ch(self, real_ch: Any) -> None:
        """Activate the subnet whose layers have the per-layer output counts `real_ch` (`decode_ch`'s form)."""
        wanted = self._real_ch_counts(real_ch)
        widths = {}
        for dim in self.model.space.widths:
            members = {op_dim: count for op_dim, count in wanted.items() if self.knob(op_dim) == dim.name}
            widths[dim.name] = self.width_for(dim, members)
        self.model.activate(Subnet(widths, self.model.active_subnet.depths))

    def _real_ch_counts(self, real_ch: Any) -> dict[str, int]:
        """`set_real_ch`'s per-group, per-layer counts as {op dimension: count}, checking that tied layers agree."""
        groups = [group for group, _ in self.groups()]
        if not isinstance(real_ch, (list, tuple)) or len(real_ch) != len(groups):
            raise InvalidSubnetError(f"set_real_ch: expected {len(groups)} groups, got {real_ch!r:.200}")
        given = dict(zip(groups, real_ch))
        counts: dict[str, int] = {}
        position = dict.fromkeys(groups, 0)
        for group, name, op_dim in self.layer_dims():
            values = given[group]
            if not isinstance(values, (list, tuple)) or position[group] >= len(values):
                raise InvalidSubnetError(f"set_real_ch: group {group!r} has too few layer counts (missing {name!r})")
            value = values[position[group]]
            position[group] += 1
            if counts.setdefault(op_dim, value) != value:
                raise InvalidSubnetError(
                    f"set_real_ch: layer {name!r} has {value} channels but {self.tied} {op_dim!r} is tied to {counts[op_dim]}"
                )
        for group in groups:
            if position[group] != len(given[group]):
                raise InvalidSubnetError(
                    f"set_real_ch: group {group!r} has {len(given[group])} counts for {position[group]} layers"
                )
        return counts


__all__ = ["WidthProtocol", "group_of"]
