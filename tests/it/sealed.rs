//! Sealed state: what the types forbid outside the crate, tried as an embedder would.
