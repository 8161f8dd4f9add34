import os

import sys, json
from ferris_ef import get_secret, get_param

print(f"DB NAME: {get_secret('DB_NAME')}")
print(f"DB PASS: {get_secret('DB_PASS')}")

print(f"PACKAGE NAME: {get_param('package_name')}")

fa = json.loads(sys.argv[1])
secrets = fa['secrets']

for k, v in secrets.items():
    print(f"{k} -> {v}")


print(os.environ)
