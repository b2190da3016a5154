-- wrk script for case 3: PUT a small JSON document to a fresh id on every request.
-- Usage: wrk ... -s bench/put.lua URL -- <path-prefix> <run-tag> [api-key]
local counter = 0
local thread_no = 0
local threads = {}

function setup(thread)
   thread_no = thread_no + 1
   thread:set("tno", thread_no)
   table.insert(threads, thread)
end

function init(args)
   prefix = args[1]
   tag = args[2]
   wrk.method = "PUT"
   wrk.body = '{"name":"item","n":1,"tags":["bench","x"],"ok":true}'
   wrk.headers["Content-Type"] = "application/json"
   if args[3] then
      wrk.headers["Authorization"] = "Bearer " .. args[3]
   end
end

function request()
   counter = counter + 1
   local path = prefix .. tag .. "-" .. tno .. "-" .. counter
   return wrk.format(nil, path)
end
