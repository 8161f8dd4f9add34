"""A first package: reads secrets at the three scopes and keeps a run counter in its state."""

from fx_ef import context

print(f"DB NAME: {context.secrets.get('DB_NAME')}")
print(f"DB PASS: {context.secrets.get('DB_PASS')}")
print(f"API TOKEN (project or platform scope, if set): {context.secrets.get('API_TOKEN')}")
print(f"PACKAGE NAME: {context.params.get('package_name')}")
print(f"GREETING PARAM: {context.params.get('greeting')}")

runs = int(context.state.get().get("runs", 0)) + 1
context.state.put("runs", runs)
context.logging.info("run number %d of this package", runs)
