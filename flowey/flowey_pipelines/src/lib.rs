//! CI pipelines that emit ci/*.yml
