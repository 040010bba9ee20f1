//! The domains behind the runnable examples, shared with the tests and the benchmark.
