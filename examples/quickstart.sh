#!/bin/sh
# A first session on the embedded store: a domain, a user, domain-admin rights, the result.
# Safe to run again: every step is idempotent.
set -eu
vcli vadddomain --exist-ok example.test --random
vcli vadduser --exist-ok alice@example.test --random
vmoduser -a alice@example.test
vuserinfo alice@example.test
vdominfo example.test
