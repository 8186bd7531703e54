#!/bin/sh
# The namespace and the custom search attributes chat-worker uses, run by the `temporal-setup` job (image
# temporalio/admin-tools) once the server answers. Idempotent: what exists is left as it is.
#
#   TEMPORAL_ADDRESS    the frontend, e.g. temporal:7233
#   NAMESPACE           e.g. default
#   RETENTION           how long closed workflows (job input and reply included) are kept, e.g. 72h
#   SEARCH_ATTRIBUTES   "Name=Type …", the list in workflows/search_attributes.py (a test compares them)
set -eu

: "${TEMPORAL_ADDRESS:?must be host:port of the Temporal frontend}"
: "${NAMESPACE:?must name the namespace}"
: "${RETENTION:?must be a duration such as 72h}"
: "${SEARCH_ATTRIBUTES:?must list Name=Type pairs}"
ATTEMPTS="${SETUP_ATTEMPTS:-60}"

t() {
    temporal --address "$TEMPORAL_ADDRESS" "$@"
}

# Retries a step until the server accepts it: a fresh server (or a fresh namespace) takes a few seconds.
retry() {
    what="$1"
    shift
    attempt=1
    until "$@"; do
        if [ "$attempt" -ge "$ATTEMPTS" ]; then
            echo "gave up: $what after $ATTEMPTS attempts" >&2
            exit 1
        fi
        attempt=$((attempt + 1))
        sleep 2
    done
}

retry "waiting for the server at $TEMPORAL_ADDRESS" t operator cluster health >/dev/null

if t operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"
else
    retry "creating namespace $NAMESPACE" t operator namespace create --namespace "$NAMESPACE" --retention "$RETENTION"
    echo "namespace $NAMESPACE created (retention $RETENTION)"
fi

for pair in $SEARCH_ATTRIBUTES; do
    name="${pair%%=*}"
    type="${pair#*=}"
    if t operator search-attribute list --namespace "$NAMESPACE" | awk '{print $1}' | grep -qx "$name"; then
        echo "search attribute $name exists"
    else
        retry "registering search attribute $name" \
            t operator search-attribute create --namespace "$NAMESPACE" --name "$name" --type "$type"
        echo "search attribute $name ($type) registered"
    fi
done
