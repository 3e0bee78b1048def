"""Pure polars transforms: load/map, validate, order, replay, plan, diff."""
