#!/bin/sh
# One database and one role per service, each role owning its own database and no other.
# The postgres image runs this once, as the superuser, on an empty data directory
# (/docker-entrypoint-initdb.d). LAVORO_DATABASES lists the services; <SERVICE>_DB_PASSWORD holds
# each role's password (deploy/.env). A service's URL is then
# postgresql://<service>:<password>@postgres:5432/<service>.
set -eu
for service in ${LAVORO_DATABASES:-placement calls safeguarding charters ledger}; do
    case "$service" in
        *[!a-z0-9_]* | [!a-z]*)
            echo "init.sh: $service is not a service name" >&2
            exit 1 ;;
    esac
    variable="$(echo "$service" | tr 'a-z' 'A-Z')_DB_PASSWORD"
    eval "password=\${$variable:-}"
    if [ -z "$password" ]; then
        echo "init.sh: $variable is not set (see deploy/.env.example)" >&2
        exit 1
    fi
    psql --no-psqlrc -v ON_ERROR_STOP=1 \
        --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
        -v role="$service" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
-- Nobody else may even connect: each service reads and writes only its own database.
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
    echo "init.sh: database and role $service"
done
