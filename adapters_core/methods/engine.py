"""The composition engine: how Stack, Fuse, Split, BatchSplit, Parallel and Average execute in
one layer, shared by every method.

A method's layer (a bottleneck location, a LoRA-wrapped linear...) mixes in
:class:`ComposableLayer` and provides a few operations on its own per-forward state (a
``NamedTuple`` whose first field is ``hidden_states``): run one adapter
(:meth:`compose_single`), slice the batch or the sequence, concatenate, average, fuse. The
engine walks the setup, checks nesting, and calls them. Blocks a method does not list in
``supported_compositions`` are refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..composition import (
    ALLOWED_NESTINGS,
    AdapterCompositionBlock,
    Average,
    BatchSplit,
    Fuse,
    MultiTask,
    Parallel,
    Split,
    Stack,
)
from ..context import AdapterSetup, ForwardContext
from ..errors import CompositionError


class ComposableLayer:
    """Mixin: executes a composition over the adapters in ``self.adapter_modules()``.

    Subclasses implement :meth:`compose_single` and, for the blocks they support,
    :meth:`fuse_outputs` (Fuse). The state slicing defaults work for a ``NamedTuple`` of
    tensors (``None`` fields and non-tensors are passed through).
    """

    supported_compositions: ClassVar[tuple[type, ...]] = (Stack,)
    layer_idx: int
    adapters_state: Any  # ModelAdaptersConfig

    # --- what a method provides -------------------------------------------------------------

    def adapter_modules(self) -> Any:
        """The ``nn.ModuleDict`` of adapters at this site."""
        raise NotImplementedError

    def compose_single(self, name: str, state: Any, lvl: int) -> Any:
        raise NotImplementedError

    def pre_block(self, setup: AdapterCompositionBlock | str, state: Any) -> Any:
        """Called before a block's children run (bottleneck: the pre-adapter norm)."""
        return state

    def fuse_outputs(self, setup: Fuse, state: Any, children: list[Any], lvl: int) -> Any:
        raise CompositionError(f"Fuse is not supported by {type(self).__name__}.")

    # --- state operations (override for non-NamedTuple states) ---------------------------

    def slice_state(self, state: Any, index: slice, dim: int) -> Any:
        def cut(t: Any) -> Any:
            if not isinstance(t, torch.Tensor) or t.dim() <= dim:
                return t
            return t[index] if dim == 0 else t[:, index]

        return type(state)(*[cut(v) for v in state])

    def concat_states(self, states: list[Any], dim: int) -> Any:
        first = states[0]
        fields: list[Any] = []
        for i, value in enumerate(first):
            column = [s[i] for s in states]
            if isinstance(value, torch.Tensor) and all(isinstance(c, torch.Tensor) for c in column):
                fields.append(torch.cat(column, dim=dim))
            else:
                fields.append(next((c for c in reversed(column) if c is not None), None))
        return type(first)(*fields)

    def average_states(self, states: list[Any], weights: list[float]) -> Any:
        h = states[0].hidden_states
        w = torch.tensor(weights[: len(states)], dtype=h.dtype, device=h.device)
        w = w.view(-1, *([1] * h.dim()))
        # the reference takes the mean of the weighted outputs (so it divides by N as well)
        stacked = torch.stack([s.hidden_states for s in states], 0) * w
        return states[0]._replace(hidden_states=stacked.mean(dim=0))

    # --- the engine -------------------------------------------------------------------------

    def active_setup(self) -> AdapterCompositionBlock | None:
        """The setup to run here, or None (nothing active, layer skipped, no adapter here)."""
        ctx = AdapterSetup.get_context()
        state = self.adapters_state
        if ctx is not None:
            setup, flat = ctx.adapter_setup, ctx.flat
        else:
            setup, flat = state.active_setup, state.active_flat
        if setup is None:
            return None
        if state.skip_layers is not None and self.layer_idx in state.skip_layers:
            return None
        modules = self.adapter_modules()
        for name in flat:
            if name in modules:
                return setup
        return None

    def channels(
        self, setup: AdapterCompositionBlock | str, bsz: int
    ) -> list[tuple[AdapterCompositionBlock | str, slice, int]] | None:
        """A Parallel or BatchSplit block as (child, rows of the batch, level of the child); None
        for any other setup.

        Each channel then runs the layer's whole forward (its own pre- and post-steps, its own
        way of applying the update) on its rows, as if the child alone were active: a channel
        whose adapter is not at this layer gets exactly the layer's plain output, and channels
        of different methods or configurations never share a step meant for another's."""
        if type(setup) is Parallel:
            n = setup.parallel_channels
            if bsz % n != 0:
                raise CompositionError(
                    "The batch size in a Parallel block must be divisible by the number of "
                    "channels."
                )
            sizes = [bsz // n] * n
        elif type(setup) is BatchSplit:
            if sum(setup.batch_sizes) != bsz:
                raise CompositionError(
                    f"The batch has size {bsz}, which differs from the sum of batch_sizes "
                    f"{setup.batch_sizes}."
                )
            sizes = list(setup.batch_sizes)
        else:
            return None
        out, start = [], 0
        for child, size in zip(setup, sizes, strict=True):
            lvl = 0
            if isinstance(child, AdapterCompositionBlock):
                self.check_child(setup, child, 0)
                lvl = 1
            out.append((child, slice(start, start + size), lvl))
            start += size
        return out

    def holds_any(self, setup: AdapterCompositionBlock | str) -> bool:
        """Whether an adapter ``setup`` names is at this layer."""
        modules = self.adapter_modules()
        names = [setup] if isinstance(setup, str) else setup.flatten()
        return any(n in modules for n in names)

    def compose(self, setup: AdapterCompositionBlock | str, state: Any, lvl: int = 0) -> Any:
        if isinstance(setup, str):
            if setup in self.adapter_modules():
                return self.compose_single(setup, state, lvl)
            return state
        if type(setup) not in self.supported_compositions:
            raise CompositionError(
                f"{type(setup).__name__} is not supported by {type(self).__name__}."
            )
        return getattr(self, _HANDLERS[type(setup)])(setup, state, lvl)

    def check_child(self, parent: AdapterCompositionBlock, child: Any, lvl: int) -> None:
        if isinstance(parent, Stack) and lvl >= 1:
            raise CompositionError(
                f"Adapter setup is too deep: cannot have {type(child).__name__} at level {lvl}."
            )
        if type(child) not in ALLOWED_NESTINGS[type(parent)]:
            raise CompositionError(
                f"Cannot nest {type(child).__name__} inside {type(parent).__name__}."
            )

    def _child(self, parent: AdapterCompositionBlock, child: Any, state: Any, lvl: int) -> Any:
        """Run one child of a block; returns None when the child has nothing here."""
        if isinstance(child, AdapterCompositionBlock):
            self.check_child(parent, child, lvl)
            return self.compose(child, state, lvl + 1)
        if child in self.adapter_modules():
            return self.compose_single(child, state, lvl + 1)
        return None

    def compose_stack(self, setup: Stack, state: Any, lvl: int) -> Any:
        for child in setup:
            if isinstance(child, AdapterCompositionBlock):
                self.check_child(setup, child, lvl)
                state = self.compose(child, state, lvl + 1)
            elif child in self.adapter_modules():
                state = self.pre_block(child, state)
                state = self.compose_single(child, state, lvl + 1)
        return state

    def compose_fuse(self, setup: Fuse, state: Any, lvl: int) -> Any:
        children = [self._child(setup, c, state, lvl) for c in setup]
        return self.fuse_outputs(setup, state, [c for c in children if c is not None], lvl)

    def compose_split(self, setup: Split, state: Any, lvl: int) -> Any:
        seq_len = state.hidden_states.shape[1]
        if sum(setup.splits) != seq_len:
            raise CompositionError(
                f"The input has sequence length {seq_len}, which differs from the sum of "
                f"splits {setup.splits}."
            )
        state = self.pre_block(setup, state)
        parts, start = [], 0
        for child, size in zip(setup, setup.splits, strict=True):
            part = self.slice_state(state, slice(start, start + size), dim=1)
            start += size
            out = self._child(setup, child, part, lvl)
            parts.append(out if out is not None else part)
        return self.concat_states(parts, dim=1)

    def _split_batch(
        self, setup: AdapterCompositionBlock, state: Any, sizes: list[int], lvl: int
    ) -> Any:
        state = self.pre_block(setup, state)
        parts, start = [], 0
        for child, size in zip(setup, sizes, strict=True):
            part = self.slice_state(state, slice(start, start + size), dim=0)
            start += size
            out = self._child(setup, child, part, lvl)
            parts.append(out if out is not None else part)
        return self.concat_states(parts, dim=0)

    def compose_batch_split(self, setup: BatchSplit, state: Any, lvl: int) -> Any:
        bsz = state.hidden_states.shape[0]
        if sum(setup.batch_sizes) != bsz:
            raise CompositionError(
                f"The batch has size {bsz}, which differs from the sum of batch_sizes "
                f"{setup.batch_sizes}."
            )
        return self._split_batch(setup, state, setup.batch_sizes, lvl)

    def compose_parallel(self, setup: Parallel, state: Any, lvl: int) -> Any:
        # the model replicated its inputs before the first layer (see model_mixin)
        bsz = state.hidden_states.shape[0]
        channels = setup.parallel_channels
        if bsz % channels != 0:
            raise CompositionError(
                "The batch size in a Parallel block must be divisible by the number of channels."
            )
        return self._split_batch(setup, state, [bsz // channels] * channels, lvl)

    def compose_average(self, setup: Average, state: Any, lvl: int) -> Any:
        state = self.pre_block(setup, state)
        children = [self._child(setup, c, state, lvl) for c in setup]
        done = [c for c in children if c is not None]
        if not done:
            return state
        weights = [w for c, w in zip(children, setup.weights, strict=True) if c is not None]
        out = self.average_states(done, weights)
        if "last" in type(out)._fields:
            out = out._replace(last=done[-1].last)
        return out

    def compose_multi_task(self, setup: MultiTask, state: Any, lvl: int) -> Any:
        """Each example to the child its ``task_ids`` entry names (the forward's argument)."""
        ctx = ForwardContext.get_context()
        task_ids = ctx.values.get("task_ids") if ctx is not None else None
        if task_ids is None:
            raise CompositionError("A MultiTask setup needs task_ids=... in the forward call.")
        names = [c if isinstance(c, str) else c.last() for c in setup]
        if isinstance(task_ids, list | tuple) and task_ids and isinstance(task_ids[0], str):
            unknown = [t for t in task_ids if t not in names]
            if unknown:
                raise CompositionError(f"task_ids name tasks {unknown} not in {names}.")
            task_ids = [names.index(t) for t in task_ids]
        device = state.hidden_states.device
        ids = torch.as_tensor(task_ids, device=device).long().reshape(-1)
        bsz = state.hidden_states.shape[0]
        if ids.shape[0] != bsz or bool(((ids < 0) | (ids >= len(names))).any()):
            raise CompositionError(
                f"task_ids must hold one task index in [0, {len(names)}) per example of the "
                f"batch ({bsz}), got {ids.tolist()}."
            )
        order = ids.argsort(stable=True)
        sizes = ids.bincount(minlength=len(names)).tolist()
        out = self._split_batch(setup, self.slice_state(state, order, dim=0), sizes, lvl)
        return self.slice_state(out, order.argsort(), dim=0)


_HANDLERS: dict[type, str] = {
    Stack: "compose_stack",
    Fuse: "compose_fuse",
    Split: "compose_split",
    BatchSplit: "compose_batch_split",
    Parallel: "compose_parallel",
    Average: "compose_average",
    MultiTask: "compose_multi_task",
}
