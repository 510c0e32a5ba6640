#!/bin/sh
# verify.sh EXPECTED: exits 0 when urls holds exactly EXPECTED hits in all and no url_hits:c* key is left
# (keys for codes not in urls, url_hits:zz*, are not looked at). Same as the original shared verify.sh.
got=$(psql -tA -h ${DB_HOST:-localhost} -p ${DB_PORT:-5432} -U ${DB_USER:-postgres} -d ${DB_NAME:-flusher_bench} -c "select coalesce(sum(access_count),0) from urls")
left=$(redis-cli -h ${REDIS_HOST:-127.0.0.1} -p ${REDIS_PORT:-6379} --scan --pattern 'url_hits:c*' | wc -l)
echo "expected=$1 got=$got known_keys_left=$left"
[ "$got" = "$1" ] && [ "$left" = 0 ]
