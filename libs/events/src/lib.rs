//! Subjects, streams and consumers of the trustmesh bus, declared once, with validated tenant ids.
