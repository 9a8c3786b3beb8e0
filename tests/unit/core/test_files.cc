#include "runtime/core/errors.h"
#include "runtime/core/files.h"
#include "runtime/core/host.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace pipet {
namespace {

using ::pipet::testing::error_message;
using ::pipet::testing::read_text;
using ::pipet::testing::TempDir;
using ::pipet::testing::write_text;

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// --- write_file_atomic -------------------------------------------------------

TEST(RemoveTree, RemovesNestedDirectoriesAndLinksButNotWhatLinksPointTo) {
  TempDir dir;
  const std::string outside = dir.file("outside");
  write_text(outside, "kept");
  const std::string tree = dir.file("tree");
  std::filesystem::create_directories(tree + "/a/b/c");
  write_text(tree + "/a/b/c/file", "x");
  write_text(tree + "/top", "y");
  ASSERT_EQ(::symlink(outside.c_str(), (tree + "/a/link").c_str()), 0);
  ASSERT_EQ(::symlink(dir.path().c_str(), (tree + "/a/b/dirlink").c_str()), 0);
  EXPECT_EQ(remove_tree(tree), "");
  EXPECT_FALSE(path_exists(tree));
  EXPECT_EQ(read_text(outside), "kept") << "a link's target must survive";
  EXPECT_EQ(remove_tree(tree), "") << "a missing path is not an error";
  EXPECT_EQ(remove_tree(outside), "") << "a plain file is removed too";
  EXPECT_FALSE(path_exists(outside));
  if (::geteuid() != 0) {  // root may remove anything
    std::filesystem::create_directories(tree + "/locked/inner");
    ASSERT_EQ(::chmod((tree + "/locked").c_str(), 0500), 0);
    const std::string problem = remove_tree(tree);
    EXPECT_NE(problem.find("inner"), std::string::npos) << problem;
    ::chmod((tree + "/locked").c_str(), 0700);
  }
}

TEST(WriteFileAtomic, CreatesFileWithExactBytes) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  const std::string bytes("a\0b\xff\n", 5);
  write_file_atomic(path, bytes);
  EXPECT_EQ(read_text(path), bytes);
}

TEST(WriteFileAtomic, ReplacesLongerContentCompletely) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  write_file_atomic(path, std::string(10000, 'x'));
  write_file_atomic(path, "short");
  EXPECT_EQ(read_text(path), "short");
  write_file_atomic(path, "");
  EXPECT_EQ(read_text(path), "");
}

TEST(WriteFileAtomic, LeavesNoTemporaryFileBehind) {
  TempDir dir;
  for (int i = 0; i < 5; ++i) write_file_atomic(dir.file("a.txt"), "round " + std::to_string(i));
  write_file_atomic(dir.file("b.txt"), "b");
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"a.txt", "b.txt"}));
}

TEST(WriteFileAtomic, WritesMultiMegabyteContent) {
  TempDir dir;
  std::string bytes(3 * 1024 * 1024 + 17, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 131) % 251);
  write_file_atomic(dir.file("big"), bytes);
  EXPECT_EQ(read_text(dir.file("big")), bytes);
}

TEST(WriteFileAtomic, RelativePathInCurrentDirectory) {
  TempDir dir;
  const std::string old_cwd = std::filesystem::current_path().string();
  ASSERT_EQ(::chdir(dir.path().c_str()), 0);
  write_file_atomic("relative.txt", "here");
  ASSERT_EQ(::chdir(old_cwd.c_str()), 0);
  EXPECT_EQ(read_text(dir.file("relative.txt")), "here");
}

TEST(WriteFileAtomic, DirectoryUnderRegularFileIsIoErrorNamingPath) {
  TempDir dir;
  write_text(dir.file("plain"), "I am a file");
  const std::string path = dir.file("plain") + "/child.txt";
  const std::string message = error_message<IoError>([&] { write_file_atomic(path, "x"); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("Not a directory"), std::string::npos) << message;
  EXPECT_EQ(read_text(dir.file("plain")), "I am a file");
}

TEST(WriteFileAtomic, MissingDirectoryIsIoError) {
  TempDir dir;
  const std::string path = dir.file("missing/out.txt");
  const std::string message = error_message<IoError>([&] { write_file_atomic(path, "x"); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
}

TEST(WriteFileAtomic, FailedRenameRemovesTemporaryFile) {
  TempDir dir;
  // A non-empty directory cannot be replaced by a file: rename fails late,
  // after the temporary file was written.
  ASSERT_TRUE(std::filesystem::create_directory(dir.file("target")));
  write_text(dir.file("target/inside"), "keep");
  const std::string message =
      error_message<IoError>([&] { write_file_atomic(dir.file("target"), "data"); });
  EXPECT_NE(message.find(dir.file("target")), std::string::npos) << message;
  EXPECT_NE(message.find("rename"), std::string::npos) << message;
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"target"}));
  EXPECT_EQ(read_text(dir.file("target/inside")), "keep");
}

TEST(WriteFileAtomic, PathWithoutFileNameIsIoError) {
  TempDir dir;
  const std::string message =
      error_message<IoError>([&] { write_file_atomic(dir.path() + "/", "x"); });
  EXPECT_NE(message.find("not a file path"), std::string::npos) << message;
}

TEST(WriteFileAtomic, ConcurrentWritersNeverMixContents) {
  TempDir dir;
  const std::string path = dir.file("shared.txt");
  std::vector<std::string> contents;
  for (int t = 0; t < 4; ++t) contents.push_back(std::string(4096 + t, static_cast<char>('a' + t)));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) write_file_atomic(path, contents[t]);
    });
  for (auto& thread : threads) thread.join();
  const std::string final_content = read_text(path);
  EXPECT_NE(std::find(contents.begin(), contents.end(), final_content), contents.end());
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"shared.txt"}));
}

// --- AtomicFileWriter --------------------------------------------------------

TEST(AtomicFileWriter, StreamsPiecesThenCommits) {
  TempDir dir;
  const std::string path = dir.file("streamed");
  write_text(path, "old");
  {
    AtomicFileWriter writer(path);
    writer.write("part one, ");
    const char raw[] = {'t', 'w', 'o'};
    writer.write(raw, sizeof(raw));
    // Not visible before commit.
    EXPECT_EQ(read_text(path), "old");
    EXPECT_EQ(list_dir(dir.path()).size(), 2u);
    writer.commit();
  }
  EXPECT_EQ(read_text(path), "part one, two");
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"streamed"}));
}

TEST(AtomicFileWriter, AbandonedWriterKeepsOldFileAndCleansUp) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_text(path, "previous version");
  {
    AtomicFileWriter writer(path);
    writer.write("half of the new ver");
  }
  EXPECT_EQ(read_text(path), "previous version");
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"model.safetensors"}));
}

TEST(AtomicFileWriter, WriteAfterCommitIsAnInternalError) {
  TempDir dir;
  AtomicFileWriter writer(dir.file("f"));
  writer.commit();
  EXPECT_EQ(read_text(dir.file("f")), "");
  try {
    writer.write("late");
    FAIL() << "write after commit succeeded";
  } catch (const IoError&) {
    FAIL() << "expected an internal error, not IoError";
  } catch (const Error& e) {
    EXPECT_EQ(e.exit_code(), ExitCode::kInternal);
  }
}

// --- read_file -----------------------------------------------------------------

TEST(ReadFile, ReadsBinaryContent) {
  TempDir dir;
  const std::string bytes("\0\1\2 three\n", 10);
  write_text(dir.file("b"), bytes);
  EXPECT_EQ(read_file(dir.file("b")), bytes);
}

TEST(ReadFile, MissingFileNamesPurposeAndPath) {
  TempDir dir;
  const std::string path = dir.file("absent.json");
  const std::string message =
      error_message<IoError>([&] { read_file(path, "trainer state"); });
  EXPECT_NE(message.find("trainer state '" + path + "'"), std::string::npos) << message;
  EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
}

TEST(ReadFile, DirectoryIsIoError) {
  TempDir dir;
  const std::string message = error_message<IoError>([&] { read_file(dir.path(), "config"); });
  EXPECT_NE(message.find(dir.path()), std::string::npos) << message;
  EXPECT_NE(message.find("directory"), std::string::npos) << message;
}

// --- ensure_writable_directory ------------------------------------------------

TEST(EnsureWritableDirectory, CreatesNestedDirectories) {
  TempDir dir;
  const std::string path = dir.file("a/b/c");
  ensure_writable_directory(path, "output.dir");
  EXPECT_TRUE(std::filesystem::is_directory(path));
  // The write probe is gone.
  EXPECT_TRUE(list_dir(path).empty());
}

TEST(EnsureWritableDirectory, AcceptsExistingDirectoryAndTrailingSlashes) {
  TempDir dir;
  write_text(dir.file("keep.txt"), "k");
  ensure_writable_directory(dir.path(), "output.dir");
  ensure_writable_directory(dir.path() + "//x//y/", "output.dir");
  EXPECT_TRUE(std::filesystem::is_directory(dir.file("x/y")));
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"keep.txt", "x"}));
}

TEST(EnsureWritableDirectory, ParentIsRegularFile) {
  TempDir dir;
  write_text(dir.file("x"), "file");
  const std::string path = dir.file("x/y");
  const std::string message =
      error_message<IoError>([&] { ensure_writable_directory(path, "output.dir"); });
  EXPECT_NE(message.find("output.dir: cannot create directory '" + path +
                         "': a parent is not a directory"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("'" + dir.file("x") + "' is a file"), std::string::npos) << message;
}

TEST(EnsureWritableDirectory, TargetIsRegularFile) {
  TempDir dir;
  write_text(dir.file("f"), "file");
  const std::string message =
      error_message<IoError>([&] { ensure_writable_directory(dir.file("f"), "checkpoint.dir"); });
  EXPECT_NE(message.find("checkpoint.dir: '" + dir.file("f") + "' exists and is not a directory"),
            std::string::npos)
      << message;
}

TEST(EnsureWritableDirectory, EmptyPathIsIoError) {
  const std::string message = error_message<IoError>([] { ensure_writable_directory("", "log.dir"); });
  EXPECT_NE(message.find("log.dir"), std::string::npos) << message;
}

TEST(EnsureWritableDirectory, UnwritableDirectoryDetectedEvenAsRoot) {
  // procfs refuses new files to everyone, root included, while access(W_OK)
  // may still say yes: only a real probe notices.
  const std::string message =
      error_message<IoError>([] { ensure_writable_directory("/proc/self", "output.dir"); });
  EXPECT_NE(message.find("output.dir: directory '/proc/self' is not writable"), std::string::npos)
      << message;
}

TEST(EnsureWritableDirectory, ReadOnlyPermissionsWhenNotRoot) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores permission bits";
  TempDir dir;
  const std::string path = dir.file("ro");
  ASSERT_EQ(::mkdir(path.c_str(), 0555), 0);
  const std::string message =
      error_message<IoError>([&] { ensure_writable_directory(path, "output.dir"); });
  EXPECT_NE(message.find("is not writable"), std::string::npos) << message;
  ::chmod(path.c_str(), 0755);
}

// --- fsync_directory / path_exists ---------------------------------------------

TEST(FsyncDirectory, ExistingDirectorySucceedsMissingThrows) {
  TempDir dir;
  EXPECT_NO_THROW(fsync_directory(dir.path()));
  const std::string missing = dir.file("nope");
  const std::string message = error_message<IoError>([&] { fsync_directory(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
}

TEST(PathExists, FilesDirectoriesAndMissing) {
  TempDir dir;
  write_text(dir.file("f"), "");
  EXPECT_TRUE(path_exists(dir.file("f")));
  EXPECT_TRUE(path_exists(dir.path()));
  EXPECT_FALSE(path_exists(dir.file("g")));
  EXPECT_FALSE(path_exists(dir.file("f/under-a-file")));
}

// The machine's tag names AutoCache's slot files: the host name made safe for
// a file name, then 8 hex digits of the name + boot id hash.
TEST(HostIdentity, TagIsTheSafeNameAndEightHexDigitsOfTheKey) {
  const HostIdentity& host = host_identity();
  EXPECT_EQ(&host, &host_identity()) << "computed once per process";
  ASSERT_FALSE(host.name.empty());
  for (const char c : host.name)
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_') << host.name;
  char name[256] = {};
  ASSERT_EQ(::gethostname(name, sizeof name - 1), 0);
  EXPECT_EQ(host.name.size(), std::string(name).size());
  const std::string tag = host.file_tag();
  ASSERT_EQ(tag.size(), host.name.size() + 9);
  EXPECT_EQ(tag.substr(0, host.name.size() + 1), host.name + "-");
  EXPECT_EQ(std::stoull(tag.substr(host.name.size() + 1), nullptr, 16), host.key & 0xffffffffu);
  // Two machines with one name differ in their boot id, so in their keys.
  HostIdentity other = host;
  other.key ^= 0x1234;
  EXPECT_NE(other.file_tag(), tag);
}

}  // namespace
}  // namespace pipet
