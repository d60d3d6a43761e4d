"""The HTTP service over a model bundle, its standard-library client and the load test."""
