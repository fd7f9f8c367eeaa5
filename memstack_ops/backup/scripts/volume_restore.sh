# In a one-off container that mounts only the volume at /v (as root): replace its contents with
# the backup's tar (on stdin). The tar is extracted beside the old contents first, so a broken
# archive fails before anything is deleted. Prints "restored" at the end.
set -e
w=/v/.memstack-restore
rm -rf "$w"; mkdir "$w"
tar -C "$w" -xpf -
find /v -mindepth 1 -maxdepth 1 ! -name .memstack-restore -exec rm -rf {} +
find "$w" -mindepth 1 -maxdepth 1 -exec mv {} /v/ \;
rmdir "$w"
echo restored
