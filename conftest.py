# Registers the vlmcls plugin when running from a checkout (installed, it loads via its pytest11
# entry point under the same name, so it is never registered twice).
pytest_plugins = ["vlmcls.plugin"]
