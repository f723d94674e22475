#!/bin/sh
# Entrypoint of the attnzoo image.
#
#   (no arguments) or options only  ->  attnzoo serve --host $ATTNZOO_HOST --port $ATTNZOO_PORT [options]
#                                       e.g. `--device cpu`, `--variants attn0010 attn1111`
#   anything else                   ->  run as given, e.g. `attnzoo fetch --all`, `attnzoo models`
#
# ATTNZOO_FETCH_ON_START=1: before serving, fetch the checkpoints of the served variants that are
# not in $ATTNZOO_WEIGHTS_DIR (/weights). A fetch that fails (no network, hash mismatch) does not
# stop the container: the service starts and reports those variants unavailable, with the reason,
# in /readyz and /models. Otherwise (the default) nothing is downloaded.
set -eu

case "${1:-}" in
    "" | -*) ;;
    *) exec "$@" ;;
esac

if [ "${ATTNZOO_FETCH_ON_START:-0}" = "1" ]; then
    if missing="$(python "$(dirname "$0")/missing_weights.py" "$@")"; then
        if [ -n "$missing" ]; then
            echo "attnzoo entrypoint: fetching missing weights:" $missing >&2
            # Word splitting of $missing is intended: one variant name per word.
            # shellcheck disable=SC2086
            attnzoo fetch $missing \
                || echo "attnzoo entrypoint: fetch failed; serving without those variants" >&2
        fi
    else
        echo "attnzoo entrypoint: could not list missing weights; serving what is there" >&2
    fi
fi

exec attnzoo serve --host "${ATTNZOO_HOST:-0.0.0.0}" --port "${ATTNZOO_PORT:-8000}" "$@"
