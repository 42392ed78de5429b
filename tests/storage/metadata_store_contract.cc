#include "storage/metadata_store_contract.h"

#include <gmock/gmock.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "crypto/crypto.h"

namespace imgsvc::storage::testing {
namespace {

using core::DeleteResult;
using core::ImageRecord;
using core::ListPage;
using core::ListQuery;
using core::Visibility;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAreArray;

constexpr core::Micros kEpoch = 1'767'225'600'000'000;  // 2026-01-01T00:00:00Z
// Generous enough that every page can be full on any backend.
constexpr std::size_t kMaxReads = 1000;

std::string At(std::int64_t seconds, std::int64_t extra_micros = 0) {
  return core::FormatTimestamp(kEpoch + seconds * 1'000'000 + extra_micros);
}

core::RandomIdGenerator g_ids;

struct Spec {
  std::string user;
  std::int64_t second = 0;
  Visibility visibility = Visibility::kPublic;
  std::optional<std::string> category = std::nullopt;
  std::vector<std::string> tags = {};
};

ImageRecord MakeRecord(const Spec& spec) {
  static int counter = 0;
  ++counter;
  ImageRecord record;
  record.image_id = g_ids.NewId();
  record.user_id = spec.user;
  record.filename = "photo-" + std::to_string(counter) + ".png";
  record.format = core::ImageFormat::kPng;
  record.size_bytes = 1000 + static_cast<std::uint64_t>(counter);
  record.width = 640;
  record.height = 480;
  const crypto::Sha256Digest digest = crypto::Sha256Of(record.image_id);
  record.sha256 = crypto::HexEncode(std::span<const std::uint8_t>(digest));
  record.category = spec.category;
  record.tags = spec.tags;
  record.visibility = spec.visibility;
  record.created_at = At(spec.second);
  record.updated_at = record.created_at;
  return record;
}

std::vector<std::string> IdsOf(const std::vector<ImageRecord>& records) {
  std::vector<std::string> ids;
  ids.reserve(records.size());
  for (const ImageRecord& record : records) ids.push_back(record.image_id);
  return ids;
}

// The user's listing order: newest first (ties in any order the store keeps).
std::vector<std::string> NewestFirst(std::vector<ImageRecord> records) {
  std::stable_sort(records.begin(), records.end(),
                   [](const ImageRecord& a, const ImageRecord& b) { return a.created_at > b.created_at; });
  return IdsOf(records);
}

ListQuery ByUser(const std::string& user, std::optional<std::string> viewer) {
  ListQuery query;
  query.user_id = user;
  query.viewer = std::move(viewer);
  return query;
}

ListQuery Scan(std::optional<std::string> viewer) {
  ListQuery query;
  query.viewer = std::move(viewer);
  return query;
}

// One page with a limit larger than anything the tests store.
std::vector<ImageRecord> ListAll(core::MetadataStore& store, const ListQuery& query) {
  StatusOr<ListPage> page = store.List(query, std::nullopt, 1000, kMaxReads);
  if (!page.ok()) {
    ADD_FAILURE() << page.status().ToString();
    return {};
  }
  EXPECT_FALSE(page->next.has_value());
  return page->items;
}

// Follows `next` until the store is exhausted, checking each page's shape.
// `between_pages` runs after every page (concurrent writes).
std::vector<ImageRecord> Walk(core::MetadataStore& store, const ListQuery& query, std::size_t limit,
                              const std::function<void(const std::vector<ImageRecord>&)>& between_pages = {}) {
  std::vector<ImageRecord> seen;
  std::optional<core::Position> position;
  for (int pages = 0; pages < 1000; ++pages) {
    StatusOr<ListPage> page = store.List(query, position, limit, kMaxReads);
    if (!page.ok()) {
      ADD_FAILURE() << page.status().ToString();
      return seen;
    }
    EXPECT_LE(page->items.size(), limit);
    if (page->next) {
      EXPECT_EQ(page->items.size(), limit) << "only a spent read budget may shorten a page";
    }
    seen.insert(seen.end(), page->items.begin(), page->items.end());
    if (!page->next) return seen;
    position = page->next;
    if (between_pages) between_pages(seen);
  }
  ADD_FAILURE() << "the walk never ended";
  return seen;
}

std::vector<std::string> Duplicates(const std::vector<std::string>& ids) {
  std::map<std::string, int> counts;
  for (const std::string& id : ids) ++counts[id];
  std::vector<std::string> duplicates;
  for (const auto& [id, count] : counts) {
    if (count > 1) duplicates.push_back(id);
  }
  return duplicates;
}

}  // namespace

std::string MetadataStoreBackendName(const ::testing::TestParamInfo<MetadataStoreBackend>& info) {
  return info.param.name;
}

void PrintTo(const MetadataStoreBackend& backend, std::ostream* os) { *os << backend.name; }

void MetadataStoreContract::SetUp() {
  store_ = GetParam().make();
  ASSERT_NE(store_, nullptr);
}

void MetadataStoreContract::Settle() const {
  if (GetParam().settle) GetParam().settle();
}

// Writing and reading ---------------------------------------------------------

TEST_P(MetadataStoreContract, PutNewThenGetReturnsEqualRecords) {
  std::vector<ImageRecord> records;
  const core::ImageFormat formats[] = {core::ImageFormat::kJpeg, core::ImageFormat::kPng,  core::ImageFormat::kGif,
                                       core::ImageFormat::kWebp, core::ImageFormat::kAvif, core::ImageFormat::kHeic,
                                       core::ImageFormat::kTiff};
  for (const core::ImageFormat format : formats) {
    ImageRecord record = MakeRecord({.user = "alice", .second = static_cast<int>(records.size())});
    record.format = format;
    records.push_back(record);
  }
  records[0].category = "Café \"quotes\" \\ and, commas";
  records[0].tags = {"zürich", "a b", "x\"y"};
  records[1].visibility = Visibility::kPrivate;
  records[1].tags = {"back\\slash", "tab\there", "[\"]", "\"", "plain"};
  records[2].tags = {"one"};
  records[2].size_bytes = 5'000'000'000;  // beyond 32 bits
  records[2].width = 70000;
  records[3].filename = "naïve ☃.png";
  records[4].updated_at = At(99, 123456);
  ASSERT_TRUE(store_->PutNew(records).ok());

  for (const ImageRecord& record : records) {
    StatusOr<ImageRecord> stored = store_->Get(record.image_id);
    ASSERT_TRUE(stored.ok()) << stored.status().ToString();
    EXPECT_EQ(*stored, record);
  }
}

TEST_P(MetadataStoreContract, GetOfAnUnknownIdIsNotFound) {
  EXPECT_EQ(store_->Get(g_ids.NewId()).status().code(), Code::kNotFound);
}

TEST_P(MetadataStoreContract, PutNewRefusesAnExistingIdAndWritesNothingOfTheCall) {
  const ImageRecord existing = MakeRecord({.user = "alice", .second = 1});
  ASSERT_TRUE(store_->PutNew(std::vector{existing}).ok());

  const ImageRecord fresh = MakeRecord({.user = "alice", .second = 2});
  ImageRecord clash = MakeRecord({.user = "bob", .second = 3});
  clash.image_id = existing.image_id;
  EXPECT_EQ(store_->PutNew(std::vector{fresh, clash}).code(), Code::kConflict);

  EXPECT_EQ(store_->Get(fresh.image_id).status().code(), Code::kNotFound);
  StatusOr<ImageRecord> kept = store_->Get(existing.image_id);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, existing);
  Settle();
  EXPECT_THAT(IdsOf(ListAll(*store_, ByUser("alice", "alice"))), ElementsAre(existing.image_id));
  EXPECT_THAT(ListAll(*store_, ByUser("bob", "bob")), IsEmpty());
}

// Updating --------------------------------------------------------------------

TEST_P(MetadataStoreContract, UpdateByTheOwnerAppliesThePatchAndSetsUpdatedAt) {
  const ImageRecord original = MakeRecord({.user = "alice", .second = 1, .visibility = Visibility::kPrivate});
  ASSERT_TRUE(store_->PutNew(std::vector{original}).ok());

  core::RecordPatch patch;
  patch.category = std::optional<std::string>("landscapes");
  patch.tags = std::vector<std::string>{"sea", "sky"};
  patch.visibility = Visibility::kPublic;
  StatusOr<ImageRecord> updated = store_->Update(original.image_id, "alice", patch, At(50, 7));
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();

  ImageRecord expected = original;
  expected.category = "landscapes";
  expected.tags = {"sea", "sky"};
  expected.visibility = Visibility::kPublic;
  expected.updated_at = At(50, 7);
  EXPECT_EQ(*updated, expected);
  StatusOr<ImageRecord> stored = store_->Get(original.image_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(*stored, expected);
}

TEST_P(MetadataStoreContract, UpdateClearsTheCategoryAndKeepsUnsetFields) {
  const ImageRecord original =
      MakeRecord({.user = "alice", .second = 1, .category = "cats", .tags = {"black", "small"}});
  ASSERT_TRUE(store_->PutNew(std::vector{original}).ok());

  core::RecordPatch patch;
  patch.category = std::optional<std::string>();
  StatusOr<ImageRecord> updated = store_->Update(original.image_id, "alice", patch, At(2));
  ASSERT_TRUE(updated.ok()) << updated.status().ToString();

  StatusOr<ImageRecord> stored = store_->Get(original.image_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->category, std::nullopt);
  EXPECT_EQ(stored->tags, original.tags);
  EXPECT_EQ(stored->visibility, original.visibility);
  EXPECT_EQ(stored->updated_at, At(2));
  EXPECT_EQ(*stored, *updated);
}

TEST_P(MetadataStoreContract, UpdateOfAnotherUsersImageIsNotFoundAndChangesNothing) {
  const ImageRecord original = MakeRecord({.user = "alice", .second = 1, .category = "cats"});
  ASSERT_TRUE(store_->PutNew(std::vector{original}).ok());

  core::RecordPatch patch;
  patch.category = std::optional<std::string>();
  patch.visibility = Visibility::kPrivate;
  EXPECT_EQ(store_->Update(original.image_id, "bob", patch, At(2)).status().code(), Code::kNotFound);

  StatusOr<ImageRecord> stored = store_->Get(original.image_id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(*stored, original);
}

TEST_P(MetadataStoreContract, UpdateOfAnUnknownImageIsNotFound) {
  core::RecordPatch patch;
  patch.visibility = Visibility::kPublic;
  EXPECT_EQ(store_->Update(g_ids.NewId(), "alice", patch, At(2)).status().code(), Code::kNotFound);
}

// Deleting --------------------------------------------------------------------

TEST_P(MetadataStoreContract, DeleteOwnedReportsEachIdAndTouchesOnlyTheOwners) {
  const ImageRecord own1 = MakeRecord({.user = "alice", .second = 1});
  const ImageRecord own2 = MakeRecord({.user = "alice", .second = 2, .visibility = Visibility::kPrivate});
  const ImageRecord others = MakeRecord({.user = "bob", .second = 3});
  ASSERT_TRUE(store_->PutNew(std::vector{own1, own2, others}).ok());
  const std::string missing = g_ids.NewId();

  const std::vector<std::string> ids = {own1.image_id, others.image_id, missing, own2.image_id};
  const std::vector<core::DeleteOutcome> outcomes = store_->DeleteOwned("alice", ids);

  ASSERT_EQ(outcomes.size(), ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(outcomes[i].image_id, ids[i]);
  EXPECT_EQ(outcomes[0].result, DeleteResult::kDeleted);
  EXPECT_EQ(outcomes[0].record, std::optional<ImageRecord>(own1));
  EXPECT_EQ(outcomes[1].result, DeleteResult::kNotFound);
  EXPECT_EQ(outcomes[1].record, std::nullopt);
  EXPECT_EQ(outcomes[2].result, DeleteResult::kNotFound);
  EXPECT_EQ(outcomes[3].result, DeleteResult::kDeleted);
  EXPECT_EQ(outcomes[3].record, std::optional<ImageRecord>(own2));

  EXPECT_EQ(store_->Get(own1.image_id).status().code(), Code::kNotFound);
  EXPECT_EQ(store_->Get(own2.image_id).status().code(), Code::kNotFound);
  StatusOr<ImageRecord> kept = store_->Get(others.image_id);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, others);
  Settle();
  EXPECT_THAT(ListAll(*store_, ByUser("alice", "alice")), IsEmpty());
  EXPECT_THAT(IdsOf(ListAll(*store_, Scan("alice"))), ElementsAre(others.image_id));
}

// Listing ---------------------------------------------------------------------

TEST_P(MetadataStoreContract, ListByUserIsNewestFirst) {
  std::vector<ImageRecord> alices;
  for (const int second : {5, 1, 3, 2, 4}) {
    alices.push_back(MakeRecord({.user = "alice", .second = second}));
    ASSERT_TRUE(store_->PutNew(std::vector{alices.back()}).ok());
  }
  ASSERT_TRUE(store_->PutNew(std::vector{MakeRecord({.user = "bob", .second = 6}),
                                         MakeRecord({.user = "bob", .second = 0})})
                  .ok());
  Settle();

  const std::vector<ImageRecord> listed = ListAll(*store_, ByUser("alice", "alice"));
  EXPECT_THAT(IdsOf(listed), ElementsAre(alices[0].image_id, alices[4].image_id, alices[2].image_id,
                                         alices[3].image_id, alices[1].image_id));
  ASSERT_FALSE(listed.empty());
  EXPECT_EQ(listed.front(), alices[0]);  // whole records, not just ids
}

TEST_P(MetadataStoreContract, ListFiltersByCategoryExactly) {
  const ImageRecord cats1 = MakeRecord({.user = "alice", .second = 1, .category = "cats"});
  const ImageRecord cats2 = MakeRecord({.user = "alice", .second = 2, .category = "cats"});
  ASSERT_TRUE(store_->PutNew(std::vector{cats1, cats2, MakeRecord({.user = "alice", .second = 3, .category = "Cats"}),
                                         MakeRecord({.user = "alice", .second = 4, .category = "cats2"}),
                                         MakeRecord({.user = "alice", .second = 5})})
                  .ok());
  Settle();

  ListQuery query = ByUser("alice", "alice");
  query.category = "cats";
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(cats2.image_id, cats1.image_id));
  query.user_id.reset();
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), UnorderedElementsAreArray({cats1.image_id, cats2.image_id}));
}

TEST_P(MetadataStoreContract, ListRequiresEveryRequestedTag) {
  const ImageRecord ab = MakeRecord({.user = "alice", .second = 1, .tags = {"a", "b"}});
  const ImageRecord a = MakeRecord({.user = "alice", .second = 2, .tags = {"a"}});
  const ImageRecord b = MakeRecord({.user = "alice", .second = 3, .tags = {"b"}});
  const ImageRecord bca = MakeRecord({.user = "alice", .second = 4, .tags = {"b", "c", "a"}});
  const ImageRecord joined = MakeRecord({.user = "alice", .second = 5, .tags = {"ab"}});
  const ImageRecord none = MakeRecord({.user = "alice", .second = 6});
  ASSERT_TRUE(store_->PutNew(std::vector{ab, a, b, bca, joined, none}).ok());
  Settle();

  ListQuery query = ByUser("alice", "alice");
  query.tags = {"a", "b"};
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(bca.image_id, ab.image_id));
  query.tags = {"ab"};
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(joined.image_id));
  query.tags = {"b"};
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(bca.image_id, b.image_id, ab.image_id));
  query.tags = {"a", "b", "c", "d"};
  EXPECT_THAT(ListAll(*store_, query), IsEmpty());
  query.user_id.reset();
  query.tags = {"a", "b"};
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), UnorderedElementsAreArray({ab.image_id, bca.image_id}));
}

TEST_P(MetadataStoreContract, ListFiltersByVisibility) {
  const ImageRecord public1 = MakeRecord({.user = "alice", .second = 1, .visibility = Visibility::kPublic});
  const ImageRecord private1 = MakeRecord({.user = "alice", .second = 2, .visibility = Visibility::kPrivate});
  const ImageRecord public2 = MakeRecord({.user = "alice", .second = 3, .visibility = Visibility::kPublic});
  const ImageRecord private2 = MakeRecord({.user = "alice", .second = 4, .visibility = Visibility::kPrivate});
  ASSERT_TRUE(store_->PutNew(std::vector{public1, private1, public2, private2}).ok());
  Settle();

  ListQuery query = ByUser("alice", "alice");
  query.visibility = Visibility::kPrivate;
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(private2.image_id, private1.image_id));
  query.visibility = Visibility::kPublic;
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(public2.image_id, public1.image_id));
  query.user_id.reset();
  query.visibility = Visibility::kPrivate;
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), UnorderedElementsAreArray({private1.image_id, private2.image_id}));
}

TEST_P(MetadataStoreContract, ListDateRangeIncludesBothBounds) {
  std::vector<ImageRecord> records;
  for (const int second : {10, 20, 30, 40, 50}) records.push_back(MakeRecord({.user = "alice", .second = second}));
  ASSERT_TRUE(store_->PutNew(records).ok());
  Settle();

  ListQuery query = ByUser("alice", "alice");
  query.created_from = At(20);
  query.created_to = At(40);
  EXPECT_THAT(IdsOf(ListAll(*store_, query)),
              ElementsAre(records[3].image_id, records[2].image_id, records[1].image_id));
  query.user_id.reset();
  EXPECT_THAT(IdsOf(ListAll(*store_, query)),
              UnorderedElementsAreArray({records[1].image_id, records[2].image_id, records[3].image_id}));

  // A microsecond past a bound excludes the image at that bound.
  query = ByUser("alice", "alice");
  query.created_from = At(20, 1);
  query.created_to = At(40, -1);
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(records[2].image_id));

  query = ByUser("alice", "alice");
  query.created_from = At(50);
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(records[4].image_id));
  query = ByUser("alice", "alice");
  query.created_to = At(10);
  EXPECT_THAT(IdsOf(ListAll(*store_, query)), ElementsAre(records[0].image_id));
}

TEST_P(MetadataStoreContract, OthersSeeOnlyPublicImages) {
  const ImageRecord alice_public = MakeRecord({.user = "alice", .second = 1, .visibility = Visibility::kPublic});
  const ImageRecord alice_private = MakeRecord({.user = "alice", .second = 2, .visibility = Visibility::kPrivate});
  const ImageRecord bob_public = MakeRecord({.user = "bob", .second = 3, .visibility = Visibility::kPublic});
  const ImageRecord bob_private = MakeRecord({.user = "bob", .second = 4, .visibility = Visibility::kPrivate});
  ASSERT_TRUE(store_->PutNew(std::vector{alice_public, alice_private, bob_public, bob_private}).ok());
  Settle();

  EXPECT_THAT(IdsOf(ListAll(*store_, ByUser("alice", "alice"))),
              ElementsAre(alice_private.image_id, alice_public.image_id));
  EXPECT_THAT(IdsOf(ListAll(*store_, ByUser("alice", "bob"))), ElementsAre(alice_public.image_id));
  EXPECT_THAT(IdsOf(ListAll(*store_, ByUser("alice", std::nullopt))), ElementsAre(alice_public.image_id));

  ListQuery others_private = ByUser("alice", "bob");
  others_private.visibility = Visibility::kPrivate;
  EXPECT_THAT(ListAll(*store_, others_private), IsEmpty());

  EXPECT_THAT(IdsOf(ListAll(*store_, Scan("alice"))),
              UnorderedElementsAreArray({alice_public.image_id, alice_private.image_id, bob_public.image_id}));
  EXPECT_THAT(IdsOf(ListAll(*store_, Scan(std::nullopt))),
              UnorderedElementsAreArray({alice_public.image_id, bob_public.image_id}));
}

TEST_P(MetadataStoreContract, WalkingAUsersListingYieldsEveryMatchOnceInOrder) {
  std::vector<ImageRecord> alices;
  for (int i = 0; i < 17; ++i) {
    // Pairs share a timestamp: resuming must not skip or repeat the twin.
    alices.push_back(MakeRecord({.user = "alice",
                                 .second = i / 2,
                                 .visibility = i % 5 == 0 ? Visibility::kPrivate : Visibility::kPublic,
                                 .tags = i % 3 == 0 ? std::vector<std::string>{"third"} : std::vector<std::string>{}}));
  }
  std::vector<ImageRecord> all = alices;
  for (int i = 0; i < 6; ++i) all.push_back(MakeRecord({.user = "bob", .second = i}));
  ASSERT_TRUE(store_->PutNew(all).ok());
  Settle();

  const std::vector<std::string> expected = IdsOf(ListAll(*store_, ByUser("alice", "alice")));
  ASSERT_THAT(expected, UnorderedElementsAreArray(IdsOf(alices)));
  EXPECT_EQ(NewestFirst(ListAll(*store_, ByUser("alice", "alice"))), expected) << "not newest first";

  ListQuery tagged = ByUser("alice", "bob");  // bob sees alice's public images only
  tagged.tags = {"third"};
  const std::vector<std::string> expected_tagged = IdsOf(ListAll(*store_, tagged));
  EXPECT_EQ(expected_tagged.size(), 4u);  // i = 3, 6, 9, 12 (0 and 15 are private)

  for (std::size_t limit = 1; limit <= 7; ++limit) {
    SCOPED_TRACE("limit " + std::to_string(limit));
    EXPECT_EQ(IdsOf(Walk(*store_, ByUser("alice", "alice"), limit)), expected);
    EXPECT_EQ(IdsOf(Walk(*store_, tagged, limit)), expected_tagged);
  }
}

TEST_P(MetadataStoreContract, WalkingAScanYieldsEveryVisibleImageOnce) {
  std::vector<ImageRecord> all;
  std::vector<std::string> visible_to_carol;
  for (int i = 0; i < 21; ++i) {
    const std::string user = i % 3 == 0 ? "alice" : i % 3 == 1 ? "bob" : "carol";
    const Visibility visibility = i % 4 == 0 ? Visibility::kPrivate : Visibility::kPublic;
    all.push_back(MakeRecord({.user = user, .second = i % 4, .visibility = visibility}));
    if (visibility == Visibility::kPublic || user == "carol") visible_to_carol.push_back(all.back().image_id);
  }
  ASSERT_TRUE(store_->PutNew(all).ok());
  Settle();

  for (std::size_t limit = 1; limit <= 7; ++limit) {
    SCOPED_TRACE("limit " + std::to_string(limit));
    const std::vector<std::string> walked = IdsOf(Walk(*store_, Scan("carol"), limit));
    EXPECT_THAT(Duplicates(walked), IsEmpty());
    EXPECT_THAT(walked, UnorderedElementsAreArray(visible_to_carol));
  }
}

namespace {

// Writes between pages: what existed throughout appears exactly once, what
// was deleted before being reached never appears, nothing appears twice.
void WalkWhileWriting(core::MetadataStore& store, const std::function<void()>& settle, const ListQuery& query) {
  std::vector<ImageRecord> initial;
  for (int i = 0; i < 24; ++i) initial.push_back(MakeRecord({.user = "alice", .second = 100 + i}));
  ASSERT_TRUE(store.PutNew(initial).ok());
  if (settle) settle();
  const std::vector<std::string> initial_list = IdsOf(initial);
  const std::set<std::string> initial_ids(initial_list.begin(), initial_list.end());
  std::set<std::string> added;
  std::set<std::string> deleted_unseen;
  std::set<std::string> deleted_seen;

  // Adds one image newer than everything and one among the unread ones,
  // deletes one unread image and one already returned.
  const auto write = [&](const std::vector<ImageRecord>& seen) {
    const std::vector<std::string> seen_list = IdsOf(seen);
    const std::set<std::string> seen_ids(seen_list.begin(), seen_list.end());
    const auto round = static_cast<std::int64_t>(seen.size());
    const std::vector<ImageRecord> fresh = {MakeRecord({.user = "alice", .second = 1000 + round}),
                                            MakeRecord({.user = "alice", .second = 100 + round % 24})};
    ASSERT_TRUE(store.PutNew(fresh).ok());
    for (const ImageRecord& record : fresh) added.insert(record.image_id);

    std::vector<std::string> doomed;
    for (const std::string& id : initial_list) {
      if (!seen_ids.contains(id) && !deleted_unseen.contains(id)) {
        doomed.push_back(id);
        deleted_unseen.insert(id);
        break;
      }
    }
    for (const std::string& id : seen_list) {
      if (initial_ids.contains(id) && !deleted_seen.contains(id)) {
        doomed.push_back(id);
        deleted_seen.insert(id);
        break;
      }
    }
    for (const core::DeleteOutcome& outcome : store.DeleteOwned("alice", doomed)) {
      EXPECT_EQ(outcome.result, DeleteResult::kDeleted) << outcome.image_id;
    }
    if (settle) settle();
  };
  const std::vector<std::string> walked = IdsOf(Walk(store, query, 3, write));

  EXPECT_THAT(Duplicates(walked), IsEmpty());
  const std::set<std::string> walked_ids(walked.begin(), walked.end());
  for (const std::string& id : initial_list) {
    if (deleted_unseen.contains(id)) {
      EXPECT_FALSE(walked_ids.contains(id)) << "returned after its deletion: " << id;
    } else {
      EXPECT_TRUE(walked_ids.contains(id)) << "never returned: " << id;
    }
  }
  for (const std::string& id : walked) {
    EXPECT_TRUE(initial_ids.contains(id) || added.contains(id)) << "unknown id " << id;
  }
  EXPECT_FALSE(deleted_unseen.empty());
}

}  // namespace

TEST_P(MetadataStoreContract, WalkingAUsersListingSurvivesConcurrentWrites) {
  WalkWhileWriting(*store_, GetParam().settle, ByUser("alice", "alice"));
}

TEST_P(MetadataStoreContract, WalkingAScanSurvivesConcurrentWrites) {
  WalkWhileWriting(*store_, GetParam().settle, Scan("alice"));
}

TEST_P(MetadataStoreContract, LimitLargerThanTheMatchesReturnsThemAllAndNoNext) {
  const std::vector<ImageRecord> records = {MakeRecord({.user = "alice", .second = 1}),
                                            MakeRecord({.user = "alice", .second = 2}),
                                            MakeRecord({.user = "alice", .second = 3})};
  ASSERT_TRUE(store_->PutNew(records).ok());
  Settle();

  for (const ListQuery& query : {ByUser("alice", "alice"), Scan("alice")}) {
    StatusOr<ListPage> page = store_->List(query, std::nullopt, 50, kMaxReads);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    EXPECT_THAT(IdsOf(page->items), UnorderedElementsAreArray(IdsOf(records)));
    EXPECT_EQ(page->next, std::nullopt);
  }
}

TEST_P(MetadataStoreContract, ExactlyLimitMatchesEndsTheWalk) {
  const std::vector<ImageRecord> records = {MakeRecord({.user = "alice", .second = 1}),
                                            MakeRecord({.user = "alice", .second = 2}),
                                            MakeRecord({.user = "alice", .second = 3})};
  ASSERT_TRUE(store_->PutNew(records).ok());
  Settle();

  StatusOr<ListPage> page = store_->List(ByUser("alice", "alice"), std::nullopt, 3, kMaxReads);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(page->items.size(), 3u);
  if (page->next) {  // a store that cannot know it is exhausted: the next page must be empty and final
    StatusOr<ListPage> after = store_->List(ByUser("alice", "alice"), page->next, 3, kMaxReads);
    ASSERT_TRUE(after.ok());
    EXPECT_THAT(after->items, IsEmpty());
    EXPECT_EQ(after->next, std::nullopt);
  }
}

TEST_P(MetadataStoreContract, AnEmptyStoreListsNothing) {
  for (const ListQuery& query : {ByUser("alice", "alice"), Scan("alice"), Scan(std::nullopt)}) {
    StatusOr<ListPage> page = store_->List(query, std::nullopt, 20, kMaxReads);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    EXPECT_THAT(page->items, IsEmpty());
    EXPECT_EQ(page->next, std::nullopt);
  }
}

// A page given to ListInto may hold another listing's records (the service
// keeps one per thread): every field of each must be overwritten, the page
// must shrink to the new listing, and its resume position must be the new one.
TEST_P(MetadataStoreContract, ListIntoAReusedPageHoldsOnlyTheNewListing) {
  std::vector<ImageRecord> alice;
  for (int i = 0; i < 4; ++i) {
    ImageRecord record = MakeRecord({.user = "alice-with-a-longer-user-id", .second = 10 + i,
                                     .visibility = Visibility::kPrivate, .category = "category-" + std::to_string(i),
                                     .tags = {"first-tag-of-some-length", "second"}});
    record.format = core::ImageFormat::kWebp;
    record.filename = "a-filename-longer-than-the-small-string-buffer-" + std::to_string(i) + ".webp";
    record.updated_at = At(50 + i, 123);
    alice.push_back(record);
  }
  const std::vector<ImageRecord> bob = {MakeRecord({.user = "bob", .second = 1}),
                                        MakeRecord({.user = "bob", .second = 2})};
  ASSERT_TRUE(store_->PutNew(alice).ok());
  ASSERT_TRUE(store_->PutNew(bob).ok());
  Settle();

  ListPage page;
  const ListQuery alices = ByUser("alice-with-a-longer-user-id", "alice-with-a-longer-user-id");
  ASSERT_TRUE(store_->ListInto(alices, std::nullopt, 3, kMaxReads, page).ok());
  ASSERT_EQ(page.items.size(), 3u);
  ASSERT_TRUE(page.next.has_value());

  ASSERT_TRUE(store_->ListInto(ByUser("bob", "bob"), std::nullopt, 3, kMaxReads, page).ok());
  StatusOr<ListPage> fresh = store_->List(ByUser("bob", "bob"), std::nullopt, 3, kMaxReads);
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  ASSERT_EQ(fresh->items.size(), 2u);
  EXPECT_EQ(page.items, fresh->items);
  EXPECT_EQ(page.next, fresh->next);
  for (const ImageRecord& record : page.items) {
    const auto original = std::find_if(bob.begin(), bob.end(),
                                       [&](const ImageRecord& b) { return b.image_id == record.image_id; });
    ASSERT_NE(original, bob.end());
    EXPECT_EQ(record, *original);
  }

  ASSERT_TRUE(store_->ListInto(ByUser("carol", "carol"), std::nullopt, 3, kMaxReads, page).ok());
  EXPECT_THAT(page.items, IsEmpty());
  EXPECT_EQ(page.next, std::nullopt);
}

TEST_P(MetadataStoreContract, IsReady) { EXPECT_TRUE(store_->CheckReady().ok()); }

}  // namespace imgsvc::storage::testing
