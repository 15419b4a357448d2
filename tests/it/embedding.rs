//! What embedding needs: start-up registration, keys that never change silently, lookups.
