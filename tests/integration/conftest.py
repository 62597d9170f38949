"""Integration fixtures.

The embedded-cluster fixtures (``cluster_redis_url``, ``start_cluster``) live
in ``tests/conftest.py``, shared with the fault tests.
"""
