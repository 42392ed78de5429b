// The DynamoDB store's own mechanics, beside the shared contract suite: the
// stored item's shape, items written by the original service, lost answers
// to conditional puts, compensation, the read budget, and table creation.
// Runs on the local peers (dynalite); each test uses a fresh table.

#include "storage/aws/dynamodb_metadata_store.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "aws/credentials.h"
#include "storage/aws_peers.h"
#include "storage/sample_record.h"
#include "support/local_aws.h"

namespace imgsvc::storage {
namespace dynamodb_metadata_store_test {

namespace json = boost::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr core::Micros kEpoch = testing::kSampleEpoch;
constexpr std::size_t kMaxReads = 1000;


std::vector<std::string> IdsOf(const std::vector<core::ImageRecord>& records) {
  std::vector<std::string> ids;
  for (const core::ImageRecord& record : records) ids.push_back(record.image_id);
  return ids;
}

core::ListQuery ByUser(const std::string& user, std::optional<std::string> viewer) {
  core::ListQuery query;
  query.user_id = user;
  query.viewer = std::move(viewer);
  return query;
}

// Every page of a listing, following `next`.
std::vector<std::string> WalkIds(core::MetadataStore& store, const core::ListQuery& query, std::size_t limit) {
  std::vector<std::string> ids;
  std::optional<core::Position> position;
  for (int pages = 0; pages < 100; ++pages) {
    StatusOr<core::ListPage> page = store.List(query, position, limit, kMaxReads);
    if (!page.ok()) {
      ADD_FAILURE() << page.status().ToString();
      return ids;
    }
    for (const std::string& id : IdsOf(page->items)) ids.push_back(id);
    if (!page->next) return ids;
    position = page->next;
  }
  ADD_FAILURE() << "the walk never ended";
  return ids;
}

json::value S(std::string_view text) {
  json::object attribute;
  attribute["S"] = json::string_view(text.data(), text.size());
  return attribute;
}

json::value N(std::string_view number) {
  json::object attribute;
  attribute["N"] = json::string_view(number.data(), number.size());
  return attribute;
}

json::value StringSet(std::initializer_list<std::string_view> texts) {
  json::array set;
  for (const std::string_view text : texts) set.emplace_back(json::string_view(text.data(), text.size()));
  json::object attribute;
  attribute["SS"] = std::move(set);
  return attribute;
}

// An attribute of a raw item as JSON text, "<absent>" when missing.
std::string Attribute(const json::object& item, std::string_view name) {
  const json::value* value = item.if_contains(json::string_view(name.data(), name.size()));
  return value == nullptr ? "<absent>" : json::serialize(*value);
}

std::shared_ptr<aws::AwsClient> NewClient() {
  aws::Credentials credentials;
  credentials.access_key_id = imgsvc::testing::kLocalAwsAccessKeyId;
  credentials.secret_access_key = imgsvc::testing::kLocalAwsSecretAccessKey;
  return std::make_shared<aws::AwsClient>(std::make_shared<net::HttpClient>(),
                                          std::make_shared<aws::StaticCredentialsProvider>(credentials));
}

// A loopback proxy in front of dynalite that loses the answer to the first
// PutItem: it forwards the request, reads dynalite's whole answer, then
// closes the client's connection without a byte. Deliberately simple: one
// request per client connection and a fresh upstream connection per request
// ("Connection: close" both ways), so no connection is ever reused.
class LostAnswerProxy {
 public:
  explicit LostAnswerProxy(net::Endpoint upstream) : upstream_(std::move(upstream)) {}
  LostAnswerProxy(const LostAnswerProxy&) = delete;
  LostAnswerProxy& operator=(const LostAnswerProxy&) = delete;

  ~LostAnswerProxy() {
    stopping_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& connection : connections_) connection.join();
    if (listener_ >= 0) ::close(listener_);
  }

  Status Start() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (listener_ < 0) return Error("socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (::bind(listener_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) return Error("bind");
    if (::listen(listener_, 64) != 0) return Error("listen");
    socklen_t length = sizeof address;
    if (::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) return Error("getsockname");
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
    return Status::Ok();
  }

  aws::ServiceTarget Target() const {
    net::Endpoint endpoint;
    endpoint.host = "127.0.0.1";
    endpoint.port = port_;
    return aws::ServiceTarget{endpoint, imgsvc::testing::kLocalAwsRegion, "dynamodb"};
  }

  int put_items() const { return put_items_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kIoTimeout{60};

  static Status Error(const char* call) {
    return Status(Code::kInternal, std::string("proxy: ") + call + ": " + std::strerror(errno));
  }

  // Whether `fd` became ready before `deadline` (false once stopping).
  static bool WaitFor(int fd, short events, Clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd poll_fd{fd, events, 0};
      const int ready = ::poll(&poll_fd, 1, static_cast<int>(std::min<long long>(left, 100)));
      if (ready > 0) return true;
      if (ready < 0 && errno != EINTR) return false;
    }
  }

  static bool SendAll(int fd, std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
      if (!WaitFor(fd, POLLOUT, deadline)) return false;
      const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (sent < 0 && errno == EINTR) continue;
      if (sent <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }

  // Whether a header line has the name `name` (any case).
  static bool HasName(std::string_view line, std::string_view name) {
    return line.size() > name.size() && line[name.size()] == ':' &&
           std::equal(name.begin(), name.end(), line.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
           });
  }

  // The header lines of a message (the start line and the blank line left out).
  static std::vector<std::string_view> HeaderLines(std::string_view message) {
    std::vector<std::string_view> lines;
    std::size_t begin = message.find("\r\n");
    while (begin != std::string_view::npos) {
      begin += 2;
      const std::size_t end = message.find("\r\n", begin);
      if (end == std::string_view::npos || end == begin) break;
      lines.push_back(message.substr(begin, end - begin));
      begin = end;
    }
    return lines;
  }

  // The value of header `name`, "" when absent.
  static std::string_view HeaderValue(std::string_view message, std::string_view name) {
    for (const std::string_view line : HeaderLines(message)) {
      if (!HasName(line, name)) continue;
      std::string_view value = line.substr(name.size() + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      return value;
    }
    return {};
  }

  // One HTTP message: complete once its head and Content-Length bytes of
  // body arrived, or (an answer without Content-Length) at end of stream.
  static std::optional<std::string> ReadMessage(int fd, Clock::time_point deadline) {
    std::string data;
    std::optional<std::size_t> total;
    char buffer[65536];
    for (;;) {
      const std::size_t head_end = data.find("\r\n\r\n");
      if (!total && head_end != std::string::npos) {
        const std::string_view length = HeaderValue(std::string_view(data).substr(0, head_end + 4), "content-length");
        std::size_t body_size = 0;
        if (std::from_chars(length.data(), length.data() + length.size(), body_size).ec == std::errc()) {
          total = head_end + 4 + body_size;
        }
      }
      if (total && data.size() >= *total) return data.substr(0, *total);
      if (!WaitFor(fd, POLLIN, deadline)) return std::nullopt;
      const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return std::nullopt;
      if (got == 0) {
        if (!total && head_end != std::string::npos) return data;
        return std::nullopt;
      }
      data.append(buffer, static_cast<std::size_t>(got));
    }
  }

  // The request with its Connection header replaced by "Connection: close".
  static std::string ForUpstream(std::string_view request) {
    const std::size_t head_end = request.find("\r\n\r\n");
    std::string rewritten(request.substr(0, request.find("\r\n") + 2));
    for (const std::string_view line : HeaderLines(request.substr(0, head_end + 4))) {
      if (HasName(line, "connection")) continue;
      rewritten += line;
      rewritten += "\r\n";
    }
    rewritten += "Connection: close\r\n\r\n";
    rewritten += request.substr(head_end + 4);
    return rewritten;
  }

  std::optional<std::string> Forward(const std::string& request, Clock::time_point deadline) const {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* addresses = nullptr;
    if (::getaddrinfo(upstream_.host.c_str(), std::to_string(upstream_.port).c_str(), &hints, &addresses) != 0) {
      return std::nullopt;
    }
    int fd = -1;
    for (const addrinfo* address = addresses; address != nullptr && fd < 0; address = address->ai_next) {
      fd = ::socket(address->ai_family, address->ai_socktype, address->ai_protocol);
      if (fd >= 0 && ::connect(fd, address->ai_addr, address->ai_addrlen) != 0) {
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(addresses);
    if (fd < 0) return std::nullopt;
    std::optional<std::string> answer;
    if (SendAll(fd, ForUpstream(request), deadline)) answer = ReadMessage(fd, deadline);
    ::close(fd);
    return answer;
  }

  void Serve(int client) {
    const Clock::time_point deadline = Clock::now() + kIoTimeout;
    if (const std::optional<std::string> request = ReadMessage(client, deadline)) {
      const std::string_view head = std::string_view(*request).substr(0, request->find("\r\n\r\n") + 4);
      const bool put_item = HeaderValue(head, "x-amz-target").find("PutItem") != std::string_view::npos;
      const std::optional<std::string> answer = Forward(*request, deadline);
      const bool lose_answer = put_item && put_items_.fetch_add(1) == 0;
      if (answer && !lose_answer) SendAll(client, *answer, deadline);
    }
    ::close(client);
  }

  void AcceptLoop() {
    while (!stopping_) {
      if (!WaitFor(listener_, POLLIN, Clock::now() + std::chrono::milliseconds(100))) continue;
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client >= 0) connections_.emplace_back([this, client] { Serve(client); });
    }
  }

  net::Endpoint upstream_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> put_items_{0};
  std::thread acceptor_;
  std::vector<std::thread> connections_;  // touched by the acceptor thread only, until it is joined
};

class DynamoDbMetadataStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    peers_ = storage::testing::Peers();
    ASSERT_NE(peers_, nullptr);
    table_ = storage::testing::UniqueName("ddb-store");
    store_ = std::make_unique<DynamoDbMetadataStore>(peers_->client, peers_->dynamodb, table_);
    const Status created = store_->CreateTableIfMissing();
    ASSERT_TRUE(created.ok()) << created.ToString();
  }

  void TearDown() override {
    if (store_ == nullptr) return;
    (void)peers_->client->CallJson(peers_->dynamodb, "DynamoDB_20120810.DeleteTable", "1.0",
                                   json::serialize(TableBody()));
  }

  json::object TableBody() const {
    json::object body;
    body["TableName"] = json::string_view(table_);
    return body;
  }

  // A call straight to DynamoDB, bypassing the store: the answer, or a test
  // failure and an empty object.
  json::object Raw(std::string_view operation, const json::object& body) const {
    StatusOr<aws::AwsResponse> response = peers_->client->CallJson(
        peers_->dynamodb, "DynamoDB_20120810." + std::string(operation), "1.0", json::serialize(body));
    if (!response.ok()) {
      ADD_FAILURE() << operation << ": " << response.status().ToString();
      return {};
    }
    if (!response->ok()) {
      ADD_FAILURE() << operation << ": " << response->status << " " << response->error.code << " "
                    << response->error.message;
      return {};
    }
    return json::parse(response->body).as_object();
  }

  std::optional<json::object> RawItem(const std::string& image_id) const {
    json::object body = TableBody();
    json::object key;
    key["image_id"] = S(image_id);
    body["Key"] = std::move(key);
    body["ConsistentRead"] = true;
    json::object answer = Raw("GetItem", body);
    json::value* item = answer.if_contains("Item");
    if (item == nullptr) return std::nullopt;
    return item->as_object();
  }

  void RawPut(json::object item) const {
    json::object body = TableBody();
    body["Item"] = std::move(item);
    Raw("PutItem", body);
  }

  const storage::testing::AwsPeers* peers_ = nullptr;
  std::string table_;
  std::unique_ptr<DynamoDbMetadataStore> store_;
};

// (1) ---------------------------------------------------------------------------

TEST_F(DynamoDbMetadataStoreTest, StoresTheDocumentedItemShape) {
  core::ImageRecord full = testing::SampleRecord("alice", 1);
  full.category = "cats";
  full.tags = {"black", "small"};
  full.visibility = core::Visibility::kPublic;
  full.size_bytes = 5'000'000'000;
  const core::ImageRecord bare = testing::SampleRecord("alice", 2);
  ASSERT_TRUE(store_->PutNew(std::vector{full, bare}).ok());

  const std::optional<json::object> item = RawItem(full.image_id);
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(item->size(), 14u) << json::serialize(*item);
  EXPECT_EQ(Attribute(*item, "image_id"), json::serialize(S(full.image_id)));
  EXPECT_EQ(Attribute(*item, "user_id"), R"({"S":"alice"})");
  EXPECT_EQ(Attribute(*item, "filename"), R"({"S":"photo.png"})");
  EXPECT_EQ(Attribute(*item, "format"), R"({"S":"png"})");
  EXPECT_EQ(Attribute(*item, "content_type"), R"({"S":"image/png"})");
  EXPECT_EQ(Attribute(*item, "size_bytes"), R"({"N":"5000000000"})");
  EXPECT_EQ(Attribute(*item, "width"), R"({"N":"640"})");
  EXPECT_EQ(Attribute(*item, "height"), R"({"N":"480"})");
  EXPECT_EQ(Attribute(*item, "sha256"), json::serialize(S(full.sha256)));
  EXPECT_EQ(Attribute(*item, "category"), R"({"S":"cats"})");
  EXPECT_EQ(Attribute(*item, "tags"), R"({"L":[{"S":"black"},{"S":"small"}]})");
  EXPECT_EQ(Attribute(*item, "visibility"), R"({"S":"public"})");
  EXPECT_EQ(Attribute(*item, "created_at"), R"({"S":"2026-01-01T00:00:01.000000Z"})");
  EXPECT_EQ(Attribute(*item, "updated_at"), R"({"S":"2026-01-01T00:00:01.000000Z"})");

  const std::optional<json::object> bare_item = RawItem(bare.image_id);
  ASSERT_TRUE(bare_item.has_value());
  EXPECT_EQ(Attribute(*bare_item, "category"), "<absent>");
  EXPECT_EQ(Attribute(*bare_item, "tags"), R"({"L":[]})");
  EXPECT_EQ(Attribute(*bare_item, "visibility"), R"({"S":"private"})");
}

TEST_F(DynamoDbMetadataStoreTest, UpdateRemovesAClearedCategoryAndStoresTagsAsAList) {
  core::ImageRecord record = testing::SampleRecord("alice", 1);
  record.category = "cats";
  ASSERT_TRUE(store_->PutNew(std::vector{record}).ok());

  core::RecordPatch patch;
  patch.category = std::optional<std::string>();
  patch.tags = std::vector<std::string>{"sea"};
  const StatusOr<core::ImageRecord> updated =
      store_->Update(record.image_id, "alice", patch, core::FormatTimestamp(kEpoch + 9));
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();

  const std::optional<json::object> item = RawItem(record.image_id);
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(Attribute(*item, "category"), "<absent>");
  EXPECT_EQ(Attribute(*item, "tags"), R"({"L":[{"S":"sea"}]})");
  EXPECT_EQ(Attribute(*item, "updated_at"), R"({"S":"2026-01-01T00:00:00.000009Z"})");
}

// (2) ---------------------------------------------------------------------------

TEST_F(DynamoDbMetadataStoreTest, ReadsItemsWrittenByTheOriginalService) {
  static core::RandomIdGenerator ids;
  const std::string newest = ids.NewId(), middle = ids.NewId(), oldest = ids.NewId();
  // No zone, no format, no visibility, tags as a string set, category NULL.
  RawPut({{"image_id", S(newest)},
          {"user_id", S("legacy")},
          {"filename", S("cat.png")},
          {"content_type", S("image/png")},
          {"size_bytes", N("48213")},
          {"width", N("64")},
          {"height", N("32")},
          {"sha256", S(std::string(64, 'b'))},
          {"category", json::object{{"NULL", true}}},
          {"tags", StringSet({"cat", "cute"})},
          {"created_at", S("2025-01-02T03:04:07.678901")}});
  // "+00:00", no fraction, no tags at all.
  RawPut({{"image_id", S(middle)},
          {"user_id", S("legacy")},
          {"filename", S("dog.jpg")},
          {"content_type", S("image/jpeg")},
          {"size_bytes", N("100")},
          {"visibility", S("public")},
          {"created_at", S("2025-01-02T03:04:06+00:00")},
          {"updated_at", S("2025-01-03T00:00:00.5+00:00")}});
  RawPut({{"image_id", S(oldest)},
          {"user_id", S("legacy")},
          {"filename", S("bird.png")},
          {"format", S("png")},
          {"tags", StringSet({"cat"})},
          {"created_at", S("2025-01-02T03:04:05.5Z")}});

  const StatusOr<core::ImageRecord> first = store_->Get(newest);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->format, core::ImageFormat::kPng);
  EXPECT_EQ(first->visibility, core::Visibility::kPrivate);
  EXPECT_EQ(first->category, std::nullopt);
  EXPECT_THAT(first->tags, UnorderedElementsAre("cat", "cute"));
  EXPECT_EQ(first->size_bytes, 48213u);
  EXPECT_EQ(first->width, 64u);
  EXPECT_EQ(first->created_at, "2025-01-02T03:04:07.678901Z");
  EXPECT_EQ(first->updated_at, "2025-01-02T03:04:07.678901Z");
  const StatusOr<core::ImageRecord> second = store_->Get(middle);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(second->format, core::ImageFormat::kJpeg);
  EXPECT_EQ(second->visibility, core::Visibility::kPublic);
  EXPECT_THAT(second->tags, IsEmpty());
  EXPECT_EQ(second->width, 0u);
  EXPECT_EQ(second->created_at, "2025-01-02T03:04:06.000000Z");
  EXPECT_EQ(second->updated_at, "2025-01-03T00:00:00.500000Z");

  // Resuming after each item uses its key as stored: a normalised timestamp
  // would sort beside it and repeat or skip items.
  for (std::size_t limit = 1; limit <= 3; ++limit) {
    SCOPED_TRACE("limit " + std::to_string(limit));
    EXPECT_THAT(WalkIds(*store_, ByUser("legacy", "legacy"), limit), ElementsAre(newest, middle, oldest));
  }
  EXPECT_THAT(WalkIds(*store_, ByUser("legacy", "someone-else"), 1), ElementsAre(middle));
  core::ListQuery tagged = ByUser("legacy", "legacy");
  tagged.tags = {"cat"};
  EXPECT_THAT(WalkIds(*store_, tagged, 10), ElementsAre(newest, oldest));
  core::ListQuery private_only = ByUser("legacy", "legacy");
  private_only.visibility = core::Visibility::kPrivate;
  EXPECT_THAT(WalkIds(*store_, private_only, 10), ElementsAre(newest, oldest));

  core::ListQuery scan;
  scan.tags = {"cute"};
  EXPECT_THAT(WalkIds(*store_, scan, 10), IsEmpty());  // private to everyone else
  scan.viewer = "legacy";
  EXPECT_THAT(WalkIds(*store_, scan, 10), ElementsAre(newest));
  scan.tags.clear();
  scan.visibility = core::Visibility::kPrivate;
  EXPECT_THAT(WalkIds(*store_, scan, 1), UnorderedElementsAre(newest, oldest));
}

// (3) ---------------------------------------------------------------------------

TEST_F(DynamoDbMetadataStoreTest, APutWhoseAnswerWasLostSucceedsWhenTheIdHoldsOurRecord) {
  LostAnswerProxy proxy(peers_->dynamodb_direct);
  ASSERT_TRUE(proxy.Start().ok());
  DynamoDbMetadataStore through_proxy(NewClient(), proxy.Target(), table_);

  const core::ImageRecord record = testing::SampleRecord("alice", 1);
  const Status put = through_proxy.PutNew(std::vector{record});
  EXPECT_TRUE(put.ok()) << put.ToString();
  EXPECT_EQ(proxy.put_items(), 2);  // the lost one and its retry
  const StatusOr<core::ImageRecord> stored = store_->Get(record.image_id);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(*stored, record);
}

TEST_F(DynamoDbMetadataStoreTest, APutWhoseAnswerWasLostIsAConflictWhenTheIdHoldsSomeoneElsesRecord) {
  const core::ImageRecord theirs = testing::SampleRecord("bob", 1);
  ASSERT_TRUE(store_->PutNew(std::vector{theirs}).ok());
  LostAnswerProxy proxy(peers_->dynamodb_direct);
  ASSERT_TRUE(proxy.Start().ok());
  DynamoDbMetadataStore through_proxy(NewClient(), proxy.Target(), table_);

  core::ImageRecord ours = testing::SampleRecord("alice", 2);
  ours.image_id = theirs.image_id;
  EXPECT_EQ(through_proxy.PutNew(std::vector{ours}).code(), Code::kConflict);
  EXPECT_EQ(proxy.put_items(), 2);
  const StatusOr<core::ImageRecord> stored = store_->Get(theirs.image_id);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(*stored, theirs);
}

// (4) ---------------------------------------------------------------------------

TEST_F(DynamoDbMetadataStoreTest, PutNewRemovesWhatItWroteWhenALaterRecordConflicts) {
  const core::ImageRecord existing = testing::SampleRecord("bob", 1);
  ASSERT_TRUE(store_->PutNew(std::vector{existing}).ok());

  const core::ImageRecord first = testing::SampleRecord("alice", 2);
  const core::ImageRecord second = testing::SampleRecord("alice", 3);
  core::ImageRecord clash = testing::SampleRecord("alice", 4);
  clash.image_id = existing.image_id;
  EXPECT_EQ(store_->PutNew(std::vector{first, second, clash}).code(), Code::kConflict);

  EXPECT_FALSE(RawItem(first.image_id).has_value());
  EXPECT_FALSE(RawItem(second.image_id).has_value());
  const StatusOr<core::ImageRecord> kept = store_->Get(existing.image_id);
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(*kept, existing);
}

// The read budget -------------------------------------------------------------

TEST_F(DynamoDbMetadataStoreTest, AFilteredReadEvaluatesAtLeastAHundredItemsAndASpentBudgetResumesAfterThem) {
  std::vector<core::ImageRecord> records;
  for (int second = 0; second < 120; ++second) records.push_back(testing::SampleRecord("alice", second));
  records.front().tags = {"rare"};  // the oldest: reached last
  ASSERT_TRUE(store_->PutNew(records).ok());
  core::ListQuery query = ByUser("alice", "alice");
  query.tags = {"rare"};

  const StatusOr<core::ListPage> first = store_->List(query, std::nullopt, 5, 1);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_THAT(first->items, IsEmpty());
  ASSERT_TRUE(first->next.has_value());
  EXPECT_EQ(first->next->image_id, records[20].image_id);  // the 100th newest, the last one read

  const StatusOr<core::ListPage> second = store_->List(query, first->next, 5, 1);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_THAT(IdsOf(second->items), ElementsAre(records.front().image_id));
  EXPECT_EQ(second->next, std::nullopt);

  const StatusOr<core::ListPage> whole = store_->List(query, std::nullopt, 5, kMaxReads);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  EXPECT_THAT(IdsOf(whole->items), ElementsAre(records.front().image_id));
  EXPECT_EQ(whole->next, std::nullopt);
}

// (5) ---------------------------------------------------------------------------

TEST_F(DynamoDbMetadataStoreTest, CreateTableIfMissingAcceptsAnExistingTable) {
  const Status again = store_->CreateTableIfMissing();
  EXPECT_TRUE(again.ok()) << again.ToString();
  const Status ready = store_->CheckReady();
  EXPECT_TRUE(ready.ok()) << ready.ToString();
}

TEST_F(DynamoDbMetadataStoreTest, CreateTableIfMissingRefusesATableWithoutTheUserIndex) {
  const std::string other = storage::testing::UniqueName("ddb-noindex");
  json::object body;
  body["TableName"] = json::string_view(other);
  body["BillingMode"] = "PAY_PER_REQUEST";
  body["AttributeDefinitions"] = json::array{json::object{{"AttributeName", "image_id"}, {"AttributeType", "S"}}};
  body["KeySchema"] = json::array{json::object{{"AttributeName", "image_id"}, {"KeyType", "HASH"}}};
  Raw("CreateTable", body);

  DynamoDbMetadataStore store(peers_->client, peers_->dynamodb, other);
  const Status created = store.CreateTableIfMissing();
  EXPECT_EQ(created.code(), Code::kInternal);
  EXPECT_THAT(created.message(), HasSubstr("UserIdIndex"));
  // Best effort: the table may still be CREATING (the store refuses it
  // without waiting), and dynalite keeps tables in memory only.
  json::object table;
  table["TableName"] = json::string_view(other);
  (void)peers_->client->CallJson(peers_->dynamodb, "DynamoDB_20120810.DeleteTable", "1.0", json::serialize(table));
}

TEST_F(DynamoDbMetadataStoreTest, CheckReadyOnAMissingTableIsUnavailableNamingDynamoDb) {
  DynamoDbMetadataStore missing(peers_->client, peers_->dynamodb, storage::testing::UniqueName("ddb-missing"));
  const Status ready = missing.CheckReady();
  EXPECT_EQ(ready.code(), Code::kUnavailable);
  EXPECT_THAT(ready.message(), HasSubstr("DynamoDB"));
}

}  // namespace dynamodb_metadata_store_test
}  // namespace imgsvc::storage
