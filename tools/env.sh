# tools/env.sh LUA - print the LUA_PATH/LUA_CPATH exports that make the rock
# tree built by `make LUA=<LUA>` (5.1, 5.3, 5.4, luajit) visible.
# SPDX-License-Identifier: MIT
lua=${1:-5.4}
abi=$lua; [ "$lua" = luajit ] && abi=5.1
tree="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/$lua"
echo "export LUA_PATH='$tree/share/lua/$abi/?.lua;$tree/share/lua/$abi/?/init.lua;;'"
echo "export LUA_CPATH='$tree/lib/lua/$abi/?.so;;'"
