//! The shared k-nearest-neighbour graph.
