-- post.lua — wrk script for bench/run.sh: every request is a POST of one
-- XenAPI call, pool.get_all(session), keep-alive.
--
--   wrk -s bench/post.lua URL -- xmlrpc SESSION_REF   XML-RPC body (POST /)
--   wrk -s bench/post.lua URL -- jsonrpc SESSION_REF  JSON-RPC 2.0 body (POST /jsonrpc)
--
-- The nginx peer is driven with the xmlrpc form, so both servers receive
-- requests of the same size.  The body is built once per wrk thread (in
-- init) and wrk then sends the same request bytes over and over.

local function xmlrpc_body(session)
   return '<?xml version="1.0"?>' ..
      '<methodCall><methodName>pool.get_all</methodName><params>' ..
      '<param><value><string>' .. session .. '</string></value></param>' ..
      '</params></methodCall>'
end

local function jsonrpc_body(session)
   return '{"jsonrpc":"2.0","method":"pool.get_all","params":["' ..
      session .. '"],"id":1}'
end

function init(args)
   local proto, session = args[1], args[2]
   if not session or session == "" then
      error("post.lua: usage: -- xmlrpc|jsonrpc SESSION_REF")
   end
   wrk.method = "POST"
   if proto == "jsonrpc" then
      wrk.body = jsonrpc_body(session)
      wrk.headers["Content-Type"] = "application/json"
   elseif proto == "xmlrpc" then
      wrk.body = xmlrpc_body(session)
      wrk.headers["Content-Type"] = "text/xml"
   else
      error("post.lua: protocol must be xmlrpc or jsonrpc, not " .. tostring(proto))
   end
end
