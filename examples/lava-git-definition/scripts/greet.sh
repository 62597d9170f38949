#!/bin/sh
# Called by definitions/greeting.yaml: it travels with the definition, in the
# same git repository, and runs on the device from the checkout's directory.
set -eu
role=${1:?usage: greet.sh ROLE}
echo "hello from the $role, run by scripts/greet.sh in $(pwd)"
lava-test-case script-ran --result pass
