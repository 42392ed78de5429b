// A minimal server for load tests (wrk) of the transport alone: every request
// gets the same ~700-byte JSON document, built fresh as a real handler would.
//   server_echo [port] [io_threads] [worker_threads]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "server/server.h"

int main(int argc, char** argv) {
  imgsvc::server::ServerOptions options;
  options.port = static_cast<std::uint16_t>(argc > 1 ? std::atoi(argv[1]) : 8080);
  options.io_threads = argc > 2 ? static_cast<std::size_t>(std::atoi(argv[2])) : 1;
  options.worker_threads = argc > 3 ? static_cast<std::size_t>(std::atoi(argv[3])) : 32;
  static const std::string kDocument = [] {
    std::string doc = R"({"id":"01JD3S4K9Q7XG2M4N8P6R5T0VW","user_id":"user-123","title":"Sunset over the bay",)"
                      R"("description":"A long exposure photo taken from the pier at dusk, with the city lights)"
                      R"( coming on.","tags":["sunset","bay","long-exposure","city"],"content_type":"image/jpeg",)"
                      R"("size":2483921,"width":4032,"height":3024,"etag":"9b2cf535f27731c974343645a3985328",)"
                      R"("created_at":"2026-11-25T17:59:59.123456Z","updated_at":"2026-11-25T18:00:00.123456Z",)"
                      R"("url":"/v1/images/01JD3S4K9Q7XG2M4N8P6R5T0VW/download?expires=1795000000&sig=abcdef"})";
    doc.resize(700, ' ');
    return doc;
  }();
  imgsvc::server::Server server(
      options,
      [](imgsvc::http::Request&) {
        imgsvc::http::Response response;
        response.set_header("content-type", "application/json");
        response.body = kDocument;
        return response;
      },
      [](int status, std::string_view detail) {
        imgsvc::http::Response response;
        response.status = status;
        response.body = std::string(detail);
        return response;
      });
  if (const auto status = server.Listen(); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  server.Run();
  return 0;
}
