// API Gateway and Lambda Function URL events <-> http::Request / http::Response.
//
// On Lambda the router sees the same transport-neutral values as under the
// standalone server: DecodeEvent turns an invocation's event JSON into an
// http::Request whose body is a MemoryBody, and EncodeResponse turns the
// router's http::Response into the response JSON of the event's shape.
//
// Three shapes arrive, told apart by their own fields:
// - REST API (payload 1.0; also what an HTTP API sends with payload 1.0):
//   `httpMethod`, `path` (without the stage; a custom domain's base path
//   mapping, if any, stays in it), `multiValueHeaders` and
//   `multiValueQueryStringParameters` (already percent-decoded by API Gateway,
//   so the raw query string is rebuilt by encoding them again).
// - HTTP API (payload 2.0): `version` "2.0", `rawPath` (which carries a
//   "/{stage}" prefix for a stage other than `$default`: stripped here),
//   `rawQueryString` as sent, lower-case comma-joined `headers`, `cookies`.
// - Function URL: the 2.0 shape, with a `*.lambda-url.*` domain name.
//
// Event bodies are in memory already (Lambda delivers at most 6 MB), so the
// decoded size becomes the request's content length and the router's size
// checks work as for a declared Content-Length.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace imgsvc::lambda {

enum class EventShape {
  kRestApi,      // API Gateway REST API, payload format 1.0
  kHttpApi,      // API Gateway HTTP API, payload format 2.0
  kFunctionUrl,  // Lambda Function URL (payload 2.0 shape)
};

struct DecodedEvent {
  EventShape shape = EventShape::kRestApi;
  http::Request request;
  // What request.body points at; owned here so the request can be moved.
  std::unique_ptr<http::MemoryBody> body;
  std::string request_id;  // requestContext.requestId, empty when absent
};

// kBadRequest, naming what is wrong, for text that is not a JSON object, an
// object of no known shape, a field of the wrong type, or a body that is not
// the base64 it claims to be. Any input is safe to pass: the runtime reports
// the error through /error and goes on.
StatusOr<DecodedEvent> DecodeEvent(std::string_view event_json);

// The Lambda response JSON for `shape`: statusCode, headers (REST API:
// repeated headers in multiValueHeaders; payload 2.0: set-cookie values in
// `cookies`, other repeated headers joined with ','), body and
// isBase64Encoded (true unless the content type is textual - text/*, JSON,
// XML, JavaScript, form data - with no content-encoding and the body is valid
// UTF-8). A file body is read from disk; if it cannot be read the encoded
// response is a 500. Framing headers (content-length, connection,
// transfer-encoding) are left to API Gateway.
std::string EncodeResponse(EventShape shape, const http::Response& response);

}  // namespace imgsvc::lambda
