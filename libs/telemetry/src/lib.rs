//! One init for logs, traces and metrics of every trustmesh service.
