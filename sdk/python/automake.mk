# sdk/python/ — the Python SDK (the XenAPI module), installed with pip
# (`pip install ./sdk/python`, no network needed: its build backend is in
# build_backend/), not by make; listed here so that `make dist` carries it.
# Tested by tests/integration/test_sdk_python.py.
EXTRA_DIST += sdk/python/XenAPI.py sdk/python/pyproject.toml \
	sdk/python/README.md sdk/python/build_backend/xenapi_build.py \
	sdk/python/examples/list_vms.py sdk/python/examples/vm_power.py \
	sdk/python/examples/watch_events.py
