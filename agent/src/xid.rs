//! NVIDIA XID knowledge (stub).
