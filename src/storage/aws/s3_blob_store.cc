#include "storage/aws/s3_blob_store.h"

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "aws/sigv4.h"
#include "aws/xml.h"
#include "core/scratch_pool.h"
#include "crypto/crypto.h"

namespace imgsvc::storage {
namespace {

constexpr std::size_t kMaxKeysPerDelete = 1000;  // DeleteObjects' limit
constexpr std::size_t kMaxParts = 10000;         // a multipart upload's limit
constexpr std::size_t kMaxKeyBytes = 1024;       // S3's key limit
constexpr char kXmlNamespace[] = "http://s3.amazonaws.com/doc/2006-03-01/";
constexpr char kDefaultRegion[] = "us-east-1";

using aws::AppendXmlEscaped;
using aws::ElementText;
using aws::NextElement;
using aws::RootElement;

// Requests ------------------------------------------------------------------

bool UsePathStyle(S3Addressing addressing, const net::Endpoint& endpoint, std::string_view bucket) {
  switch (addressing) {
    case S3Addressing::kPath:
      return true;
    case S3Addressing::kVirtual:
      return false;
    case S3Addressing::kAuto:
      break;
  }
  return endpoint.IsIpLiteralOrLocalhost() || bucket.find('.') != std::string_view::npos;
}

// Puts the bucket into the host (virtual-hosted) and returns the path prefix
// ("/{bucket}" path-style, "" virtual-hosted).
std::string RouteToBucket(aws::ServiceTarget& target, S3Addressing addressing, const std::string& bucket) {
  if (UsePathStyle(addressing, target.endpoint, bucket)) return "/" + aws::UriEncode(bucket, /*keep_slash=*/false);
  target.endpoint.host = bucket + "." + target.endpoint.host;
  return {};
}

std::string BucketPath(const std::string& path_prefix) { return path_prefix.empty() ? "/" : path_prefix; }

void AssignObjectPath(std::string& path, const std::string& path_prefix, std::string_view key) {
  path.assign(path_prefix).push_back('/');
  aws::AppendUriEncoded(path, key, /*keep_slash=*/true);
}

std::string ObjectPath(const std::string& path_prefix, std::string_view key) {
  std::string path;
  AssignObjectPath(path, path_prefix, key);
  return path;
}

core::Micros EpochMicros(std::chrono::system_clock::time_point when) {
  return std::chrono::duration_cast<std::chrono::microseconds>(when.time_since_epoch()).count();
}

Status CheckKey(std::string_view key) {
  if (key.empty()) return Status(Code::kBadRequest, "S3: empty object key");
  if (key.size() > kMaxKeyBytes) return Status(Code::kBadRequest, "S3: object key longer than 1024 bytes");
  return Status::Ok();
}

aws::AwsRequest MakeRequest(std::string method, std::string path) {
  aws::AwsRequest request;
  request.method = std::move(method);
  request.path = std::move(path);
  return request;
}

// An answer, or the Status of a call that got none.
StatusOr<aws::AwsResponse> Send(aws::AwsClient& client, const aws::ServiceTarget& target,
                                std::string_view operation, aws::AwsRequest request) {
  StatusOr<aws::AwsResponse> response = client.Send(target, std::move(request));
  if (!response.ok()) return response.status().WithContext(operation);
  return response;
}

// A successful answer, or the failure as a Status. S3 may answer 200 and
// put an <Error> document in the body (CompleteMultipartUpload commits to
// the status before it knows the outcome): that is a server-side failure.
StatusOr<aws::AwsResponse> Perform(aws::AwsClient& client, const aws::ServiceTarget& target,
                                   std::string_view operation, aws::AwsRequest request) {
  IMGSVC_ASSIGN_OR_RETURN(aws::AwsResponse response, Send(client, target, operation, std::move(request)));
  if (!response.ok()) return aws::ToStatus(operation, response);
  if (RootElement(response.body) == "Error") {
    response.status = 500;
    response.error = aws::ParseAwsError(response.status, response.headers, response.body);
    return aws::ToStatus(operation, response);
  }
  return response;
}

// Uploads --------------------------------------------------------------------

}  // namespace

class LargeUploadSlots {
 public:
  LargeUploadSlots(std::size_t slots, std::chrono::milliseconds wait) : free_(slots), wait_(wait) {}

  Status Acquire() {
    std::unique_lock lock(mutex_);
    if (!released_.wait_for(lock, wait_, [this] { return free_ > 0; })) {
      return Status(Code::kUnavailable, "S3: too many large uploads in progress").set_retry_after(5);
    }
    --free_;
    return Status::Ok();
  }

  void Release() {
    {
      std::lock_guard lock(mutex_);
      ++free_;
    }
    released_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  std::size_t free_;
  std::chrono::milliseconds wait_;
};

namespace {

class S3Upload final : public core::BlobUpload {
 public:
  S3Upload(std::shared_ptr<aws::AwsClient> client, aws::ServiceTarget target, std::string path,
           std::string content_type, std::size_t part_size, std::shared_ptr<LargeUploadSlots> large_uploads)
      : client_(std::move(client)),
        target_(std::move(target)),
        path_(std::move(path)),
        content_type_(std::move(content_type)),
        part_size_(part_size),
        large_uploads_(std::move(large_uploads)) {}

  S3Upload(const S3Upload&) = delete;
  S3Upload& operator=(const S3Upload&) = delete;

  ~S3Upload() override {
    Abort();
    ReleaseSlot();
  }

  Status Append(std::span<const std::byte> data) override {
    if (finished_) return Finished();
    while (!data.empty()) {
      // A full part goes out only once more bytes follow, so an object of
      // exactly one part is still a single PutObject.
      if (buffer_.size() == part_size_) {
        if (Status sent = SendPart(); !sent.ok()) return Fail(std::move(sent));
      }
      if (!holds_slot_ && buffer_.size() + data.size() > S3BlobStore::kUnreservedUploadBytes) {
        if (Status slot = large_uploads_->Acquire(); !slot.ok()) return Fail(std::move(slot));
        holds_slot_ = true;
        // A large upload fills whole parts: no regrowing and copying on the way.
        buffer_.reserve(part_size_);
      }
      const std::size_t n = std::min(part_size_ - buffer_.size(), data.size());
      Reserve(buffer_.size() + n);
      buffer_.append(reinterpret_cast<const char*>(data.data()), n);
      data = data.subspan(n);
    }
    return Status::Ok();
  }

  Status Commit(std::string_view content_sha256) override {
    if (finished_) return Finished();
    finished_ = true;
    if (!upload_id_) {
      Status put = PutObject(content_sha256);
      ReleaseSlot();
      return put;
    }
    Status completed = SendPart();
    if (completed.ok()) completed = AwaitPart();
    if (completed.ok()) completed = Complete();
    if (!completed.ok()) return Fail(std::move(completed));
    upload_id_.reset();  // nothing left to abort
    ReleaseSlot();
    return Status::Ok();
  }

 private:
  static Status Finished() { return Status(Code::kInternal, "S3: upload already finished"); }

  void ReleaseSlot() {
    if (!holds_slot_) return;
    holds_slot_ = false;
    large_uploads_->Release();
  }

  // Grows like a vector would, but never past one part: the buffer is all the
  // memory an upload holds.
  void Reserve(std::size_t needed) {
    if (buffer_.capacity() >= needed) return;
    buffer_.reserve(std::min(part_size_, std::max(needed, 2 * buffer_.capacity())));
  }

  Status Fail(Status status) {
    finished_ = true;
    std::string().swap(buffer_);
    Abort();
    ReleaseSlot();
    return status;
  }

  // Best effort: the upload is going away either way. Parts a failed abort
  // leaves behind are for the bucket's AbortIncompleteMultipartUpload
  // lifecycle rule to reclaim; the client has logged the failure.
  void Abort() {
    static_cast<void>(AwaitPart());
    if (!upload_id_) return;
    aws::AwsRequest request = MakeRequest("DELETE", path_);
    request.query = {{"uploadId", *upload_id_}};
    upload_id_.reset();
    static_cast<void>(client_->Send(target_, std::move(request)));
  }

  // The object in one request, whose signed payload hash is the caller's
  // hash of the whole content: a 64 KiB image is not hashed a second time.
  Status PutObject(std::string_view content_sha256) {
    aws::AwsRequest request = MakeRequest("PUT", path_);
    if (!content_type_.empty()) request.headers.push_back({"Content-Type", content_type_});
    request.body = std::move(buffer_);
    request.payload_sha256 = content_sha256;
    return Perform(*client_, target_, "S3 PutObject", std::move(request)).status();
  }

  Status CreateMultipartUpload() {
    aws::AwsRequest request = MakeRequest("POST", path_);
    request.query = {{"uploads", ""}};
    if (!content_type_.empty()) request.headers.push_back({"Content-Type", content_type_});
    IMGSVC_ASSIGN_OR_RETURN(aws::AwsResponse response,
                            Perform(*client_, target_, "S3 CreateMultipartUpload", std::move(request)));
    std::optional<std::string> upload_id = ElementText(response.body, "UploadId");
    if (!upload_id || upload_id->empty()) {
      return Status(Code::kInternal, "S3 CreateMultipartUpload: the answer carries no UploadId");
    }
    upload_id_ = std::move(*upload_id);
    return Status::Ok();
  }

  // Sends the buffer as the next part, starting the multipart upload first
  // when this is the first part. The part goes out on its own thread while
  // the caller fills the next one, so the client's upload and ours to S3
  // overlap; one part at a time is in flight (the previous one is awaited
  // first), which keeps parts in order and the memory to two parts.
  Status SendPart() {
    if (!upload_id_) IMGSVC_RETURN_IF_ERROR(CreateMultipartUpload());
    IMGSVC_RETURN_IF_ERROR(AwaitPart());
    if (parts_started_ >= kMaxParts) {
      return Status(Code::kPayloadTooLarge, "S3: the object needs more than 10000 parts");
    }
    aws::AwsRequest request = MakeRequest("PUT", path_);
    request.query = {{"partNumber", std::to_string(++parts_started_)}, {"uploadId", *upload_id_}};
    // Moved, not copied: the part is the upload's memory while it is sent.
    request.body = std::move(buffer_);
    buffer_ = std::string();
    if (holds_slot_) buffer_.reserve(part_size_);
    part_in_flight_ = std::async(std::launch::async, [this, request = std::move(request),
                                                      deadline = aws::ScopedDeadline::Current()]() mutable {
      std::optional<aws::ScopedDeadline> scope;
      if (deadline) scope.emplace(*deadline);
      StatusOr<aws::AwsResponse> response = Perform(*client_, target_, "S3 UploadPart", std::move(request));
      if (!response.ok()) return response.status();
      const std::string_view etag = response->HeaderValue("ETag");
      if (etag.empty()) return Status(Code::kInternal, "S3 UploadPart: the answer carries no ETag");
      part_etags_.emplace_back(etag);
      return Status::Ok();
    });
    return Status::Ok();
  }

  // The outcome of the part in flight, if one is.
  Status AwaitPart() {
    if (!part_in_flight_.valid()) return Status::Ok();
    return part_in_flight_.get();
  }

  Status Complete() {
    std::string body = "<CompleteMultipartUpload xmlns=\"";
    body += kXmlNamespace;
    body += "\">";
    for (std::size_t i = 0; i < part_etags_.size(); ++i) {
      body += "<Part><PartNumber>";
      body += std::to_string(i + 1);
      body += "</PartNumber><ETag>";
      AppendXmlEscaped(body, part_etags_[i]);
      body += "</ETag></Part>";
    }
    body += "</CompleteMultipartUpload>";
    aws::AwsRequest request = MakeRequest("POST", path_);
    request.query = {{"uploadId", *upload_id_}};
    request.headers.push_back({"Content-Type", "application/xml"});
    request.body = std::move(body);
    return Perform(*client_, target_, "S3 CompleteMultipartUpload", std::move(request)).status();
  }

  std::shared_ptr<aws::AwsClient> client_;
  aws::ServiceTarget target_;
  std::string path_;
  std::string content_type_;
  std::size_t part_size_;
  std::shared_ptr<LargeUploadSlots> large_uploads_;
  bool holds_slot_ = false;
  std::string buffer_;
  std::optional<std::string> upload_id_;  // set while a multipart upload is open
  std::vector<std::string> part_etags_;   // part i + 1's ETag, as S3 sent it
  std::size_t parts_started_ = 0;
  std::future<Status> part_in_flight_;     // written part_etags_ when it succeeded
  bool finished_ = false;
};

// Deletes ---------------------------------------------------------------------

// A key DeleteObjects could not delete. The entry has no HTTP status of its
// own, so whether to retry later is judged by its code alone.
Status KeyFailure(const aws::AwsError& error) {
  std::string message = "S3 DeleteObjects: " + error.code + ": " + error.message;
  if (!error.request_id.empty()) message += " (request id " + error.request_id + ")";
  const bool transient = aws::IsRetryable(/*status=*/400, error);
  return Status(transient ? Code::kUnavailable : Code::kInternal, std::move(message));
}

// One DeleteObjects call for up to 1000 keys; results[i] is keys[i]'s.
void DeleteBatch(aws::AwsClient& client, const aws::ServiceTarget& target, const std::string& bucket_path,
                 std::span<const std::string> keys, std::span<Status> results) {
  std::string body = "<Delete xmlns=\"";
  body += kXmlNamespace;
  body += "\"><Quiet>true</Quiet>";
  for (const std::string& key : keys) {
    body += "<Object><Key>";
    AppendXmlEscaped(body, key);
    body += "</Key></Object>";
  }
  body += "</Delete>";
  aws::AwsRequest request = MakeRequest("POST", bucket_path);
  request.query = {{"delete", ""}};
  request.headers.push_back({"Content-Type", "application/xml"});
  request.headers.push_back({"Content-MD5", crypto::Md5Base64(body)});  // S3 requires it here
  request.body = std::move(body);

  const StatusOr<aws::AwsResponse> response = Perform(client, target, "S3 DeleteObjects", std::move(request));
  if (!response.ok()) {
    std::fill(results.begin(), results.end(), response.status());
    return;
  }
  // Quiet mode: only the keys that failed are listed. A missing key is not
  // one of them (S3 reports it deleted); NoSuchKey is accepted all the same.
  std::unordered_multimap<std::string_view, std::size_t> index_of_key;
  std::size_t pos = 0;
  const std::string_view document = response->body;
  while (const std::optional<std::string_view> entry = NextElement(document, "Error", pos)) {
    aws::AwsError error;
    error.code = ElementText(*entry, "Code").value_or("");
    if (error.code == "NoSuchKey") continue;
    error.message = ElementText(*entry, "Message").value_or("");
    error.request_id = std::string(response->HeaderValue("x-amz-request-id"));
    if (index_of_key.empty()) {
      for (std::size_t i = 0; i < keys.size(); ++i) index_of_key.emplace(keys[i], i);
    }
    const std::string key = ElementText(*entry, "Key").value_or("");
    const auto [begin, end] = index_of_key.equal_range(key);
    for (auto it = begin; it != end; ++it) results[it->second] = KeyFailure(error);
  }
}

}  // namespace

StatusOr<S3Addressing> ParseS3Addressing(std::string_view text) {
  if (text == "auto") return S3Addressing::kAuto;
  if (text == "path") return S3Addressing::kPath;
  if (text == "virtual") return S3Addressing::kVirtual;
  return Status(Code::kBadRequest, "S3 addressing must be auto, path or virtual, not \"" + std::string(text) + "\"");
}

S3BlobStore::S3BlobStore(std::shared_ptr<aws::AwsClient> client, aws::ServiceTarget target, S3Options options)
    : client_(std::move(client)),
      // Zero would never fill a part; one byte at least keeps the loop going.
      part_size_(std::max<std::size_t>(options.part_size, 1)),
      large_uploads_(std::make_shared<LargeUploadSlots>(options.max_large_uploads, options.large_upload_wait)),
      target_(std::move(target)),
      presign_target_(target_) {
  if (options.public_endpoint) presign_target_.endpoint = *options.public_endpoint;
  path_prefix_ = RouteToBucket(target_, options.addressing, options.bucket);
  presign_path_prefix_ = RouteToBucket(presign_target_, options.addressing, options.bucket);
}

Status S3BlobStore::CreateBucketIfMissing() {
  IMGSVC_ASSIGN_OR_RETURN(aws::AwsResponse found,
                          Send(*client_, target_, "S3 HeadBucket", MakeRequest("HEAD", BucketPath(path_prefix_))));
  if (found.ok()) return Status::Ok();
  if (found.status != 404) return aws::ToStatus("S3 HeadBucket", found);

  aws::AwsRequest request = MakeRequest("PUT", BucketPath(path_prefix_));
  // us-east-1 is the default location and must not be named.
  if (!target_.region.empty() && target_.region != kDefaultRegion) {
    request.body = "<CreateBucketConfiguration xmlns=\"";
    request.body += kXmlNamespace;
    request.body += "\"><LocationConstraint>";
    AppendXmlEscaped(request.body, target_.region);
    request.body += "</LocationConstraint></CreateBucketConfiguration>";
    request.headers.push_back({"Content-Type", "application/xml"});
  }
  IMGSVC_ASSIGN_OR_RETURN(aws::AwsResponse created, Send(*client_, target_, "S3 CreateBucket", std::move(request)));
  if (created.ok() || created.error.code == "BucketAlreadyOwnedByYou") return Status::Ok();
  return aws::ToStatus("S3 CreateBucket", created);
}

StatusOr<std::unique_ptr<core::BlobUpload>> S3BlobStore::StartUpload(std::string_view key,
                                                                      std::string_view content_type) {
  IMGSVC_RETURN_IF_ERROR(CheckKey(key));
  return std::unique_ptr<core::BlobUpload>(std::make_unique<S3Upload>(
      client_, target_, ObjectPath(path_prefix_, key), std::string(content_type), part_size_, large_uploads_));
}

std::vector<Status> S3BlobStore::Delete(std::span<const std::string> keys) {
  std::vector<Status> results(keys.size());
  const std::string bucket_path = BucketPath(path_prefix_);
  for (std::size_t begin = 0; begin < keys.size(); begin += kMaxKeysPerDelete) {
    const std::size_t count = std::min(kMaxKeysPerDelete, keys.size() - begin);
    DeleteBatch(*client_, target_, bucket_path, keys.subspan(begin, count),
                std::span<Status>(results).subspan(begin, count));
  }
  return results;
}

StatusOr<core::PresignedUrl> S3BlobStore::PresignGet(std::string_view key, std::chrono::seconds expires_in) {
  IMGSVC_RETURN_IF_ERROR(CheckKey(key));
  StatusOr<aws::AwsClient::Presigned> presigned =
      client_->PresignGet(presign_target_, ObjectPath(presign_path_prefix_, key), expires_in);
  if (!presigned.ok()) return presigned.status().WithContext("S3 presign");
  core::PresignedUrl url;
  url.url = std::move(presigned->url);
  url.expires_at = EpochMicros(presigned->expires_at);
  return url;
}

Status S3BlobStore::PresignGets(std::span<const std::string> keys, std::chrono::seconds expires_in,
                                std::vector<core::PresignedUrl>& urls) {
  // Lent for their memory, not kept per thread: a request on a fiber may
  // park in the presign, for the credentials, while another request of its
  // thread presigns. Never destroyed: a thread still ending a request at
  // exit may give back.
  static auto& path_lists = *new core::ScratchPool<std::vector<std::string>>();
  const auto lease = path_lists.Take();
  std::vector<std::string>& paths = *lease;
  paths.resize(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    IMGSVC_RETURN_IF_ERROR(CheckKey(keys[i]));
    AssignObjectPath(paths[i], presign_path_prefix_, keys[i]);
  }
  urls.resize(keys.size());
  const StatusOr<std::chrono::system_clock::time_point> expires_at = client_->PresignGets(
      presign_target_, paths, expires_in, [&urls](std::size_t i, std::string_view url) { urls[i].url.assign(url); });
  if (!expires_at.ok()) return expires_at.status().WithContext("S3 presign");
  for (core::PresignedUrl& url : urls) url.expires_at = EpochMicros(*expires_at);
  return Status::Ok();
}

Status S3BlobStore::CheckReady() {
  StatusOr<aws::AwsResponse> response = client_->Send(target_, MakeRequest("HEAD", BucketPath(path_prefix_)));
  // Only the code of a call that got no answer: its message names the address.
  if (!response.ok()) {
    return Status(Code::kUnavailable, std::string("S3 HeadBucket failed (") + CodeName(response.status().code()) + ")");
  }
  if (!response->ok()) {
    return Status(Code::kUnavailable, "S3 HeadBucket answered HTTP " + std::to_string(response->status));
  }
  return Status::Ok();
}

}  // namespace imgsvc::storage
