// The JSON bodies of responses, written directly into a string.
//
// Records are serialised on every read request, so this writes fields in the
// order of API.md without building a DOM first.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/image.h"
#include "core/service.h"
#include "core/status.h"

namespace imgsvc::http {

std::string RecordJson(const core::ImageRecord& record);
std::string ImageWithUrlJson(const core::ImageWithUrl& image);
std::string UploadResponseJson(const std::vector<core::ImageRecord>& records);
std::string ListResponseJson(const core::ListResult& result);
std::string BulkDeleteJson(const core::BulkDeleteResult& result);
// {"detail": "<message>"}
std::string DetailJson(std::string_view message);
// {"detail": [{"loc": [...], "msg": "...", "type": "..."}, ...]}
std::string ValidationErrorJson(const std::vector<FieldError>& errors);

}  // namespace imgsvc::http
