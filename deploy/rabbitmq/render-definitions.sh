#!/bin/sh
# Render lavoro's RabbitMQ definitions with the passwords from the environment, then start the
# broker through the image's own entrypoint (with arguments; without, it only renders).
# definitions.json names each password ${RABBITMQ_<USER>_PASSWORD}; a missing one, or one with
# characters that would break the services' AMQP URLs, stops the start here with its name.
set -eu
template="${LAVORO_DEFINITIONS_TEMPLATE:-/etc/lavoro/definitions.json}"
out="${LAVORO_DEFINITIONS:-/var/lib/rabbitmq/lavoro-definitions.json}"

for name in $(grep -o '\${RABBITMQ_[A-Z_]*_PASSWORD}' "$template" | tr -d '${}' | sort -u); do
    eval "value=\${$name:-}"
    case "$value" in
        "")
            echo "render-definitions: $name is not set (see deploy/.env.example)" >&2
            exit 1 ;;
        *[!A-Za-z0-9._~-]*)
            echo "render-definitions: $name may only hold A-Z a-z 0-9 . _ ~ - (it goes into a URL)" >&2
            exit 1 ;;
    esac
done

umask 077
awk '{
    while (match($0, /\$\{RABBITMQ_[A-Z_]+_PASSWORD\}/)) {
        name = substr($0, RSTART + 2, RLENGTH - 3)
        $0 = substr($0, 1, RSTART - 1) ENVIRON[name] substr($0, RSTART + RLENGTH)
    }
    print
}' "$template" > "$out.tmp"
mv "$out.tmp" "$out"
if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    chown rabbitmq:rabbitmq "$out"
fi

if [ "$#" -gt 0 ]; then
    exec docker-entrypoint.sh "$@"
fi
