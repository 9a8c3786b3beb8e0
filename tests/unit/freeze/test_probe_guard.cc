// The probe guard on synthetic probe losses: a change that keeps the
// trend holds, one that stalls or worsens the loss is revoked, the cooldown
// holds freezing back, an unguarded first probe never revokes, the state
// resumes, bad values are named.
#include "freeze/probe_guard.h"
#include "runtime/core/errors.h"
#include "tests/support/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>

namespace pipet {
namespace {

using testing::error_message;

TEST(ProbeGuard, AChangeThatKeepsTheTrendHolds) {
  ProbeGuard guard(ProbeGuardOptions{0.02, 2});
  EXPECT_FALSE(guard.check(2.0));
  EXPECT_FALSE(guard.check(1.8));  // improving by 0.2 per interval
  guard.changed(0);                // f 0 -> 2 at this decision
  // Slower (0.15 against 0.2), as a flattening curve is: it holds.
  EXPECT_FALSE(guard.check(1.65));
}

TEST(ProbeGuard, AChangeThatStallsOrWorsensTheLossIsRevokedThenCoolsDown) {
  ProbeGuard guard(ProbeGuardOptions{0.02, 2});
  guard.check(2.0);
  guard.check(1.8);
  guard.changed(1);
  // The loss stops improving (1.8 -> 1.79 instead of about -0.2): revoke to 1.
  EXPECT_EQ(guard.check(1.79), 1);
  EXPECT_FALSE(guard.may_freeze_more());
  EXPECT_FALSE(guard.check(1.70));
  EXPECT_FALSE(guard.may_freeze_more());
  EXPECT_FALSE(guard.check(1.65));
  EXPECT_TRUE(guard.may_freeze_more()) << "two decisions of cooldown";
  // A change on a plateau that makes the loss worse is revoked too.
  guard.changed(3);
  EXPECT_EQ(guard.check(1.75), 3);
}

TEST(ProbeGuard, NothingFreezesBeforeATrendAndNoPendingChangeNeverRevokes) {
  ProbeGuard guard(ProbeGuardOptions{0.02, 0});
  EXPECT_FALSE(guard.check(5.0));
  EXPECT_FALSE(guard.may_freeze_more()) << "one probe: no trend to check a change against";
  EXPECT_FALSE(guard.check(9.0));   // no pending change: a worse loss alone is not a revocation
  EXPECT_TRUE(guard.may_freeze_more());
}

TEST(ProbeGuard, StateResumesAndBadValuesAreNamed) {
  ProbeGuard guard(ProbeGuardOptions{0.02, 2});
  guard.check(2.0);
  guard.check(1.8);
  guard.changed(1);
  ProbeGuard resumed(ProbeGuardOptions{0.02, 2});
  resumed.restore(guard.state());
  EXPECT_EQ(resumed.check(1.79), guard.check(1.79));
  EXPECT_EQ(resumed.state(), guard.state());

  EXPECT_NE(error_message<ConfigError>([] { ProbeGuard(ProbeGuardOptions{0.0, 2}); }).find("probe_tolerance"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([] { ProbeGuard(ProbeGuardOptions{0.1, -1}); }).find("cooldown = -1"),
            std::string::npos);
  EXPECT_NE(error_message<ConfigError>([&] { guard.check(std::nan("")); }).find("probe loss nan"), std::string::npos);
  ProbeGuardState bad;
  bad.pending_before = -3;
  EXPECT_THROW(guard.restore(bad), ConfigError);
}

}  // namespace
}  // namespace pipet
