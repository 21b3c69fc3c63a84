"""Tools that wire several packages together: fleet registration and loading, every benchmark.

The only package allowed to import the simulator, the store and the stack together; `cli`, the tests
and `loadtests/` use it, and no library package imports it.
"""
