# The server's data directory, file names, persistence settings, version and key counts, after
# the REDIS_AUTH prelude. key=value lines for the settings, INFO's key:value lines for the rest.
get() { r CONFIG GET "$1" 2>/dev/null | sed -n 2p; }
echo "dir=$(get dir)"; echo "dbfilename=$(get dbfilename)"; echo "appendonly=$(get appendonly)"
echo "appenddirname=$(get appenddirname)"
r INFO | tr -d '\r' | grep -E '^(redis_version|used_memory_dataset|used_memory|db[0-9]+):'
