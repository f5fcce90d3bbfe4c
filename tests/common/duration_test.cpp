#include "loom/common/duration.hpp"

#include <gtest/gtest.h>

namespace loom {
namespace {

std::int64_t seconds_of(std::string_view text) {
  auto d = parse_duration(text);
  EXPECT_TRUE(d.has_value()) << text << ": " << d.error().to_string();
  return d ? d->count() : -1;
}

std::string error_of(std::string_view text) {
  auto d = parse_duration(text);
  EXPECT_FALSE(d.has_value()) << text << " parsed as " << (d ? d->count() : 0) << " s";
  return d ? "" : d.error().message();
}

TEST(ParseDuration, ABareNumberIsMinutesAsInSbatch) { EXPECT_EQ(seconds_of("90"), 90 * 60); }

TEST(ParseDuration, SlurmColonForms) {
  EXPECT_EQ(seconds_of("90:30"), 90 * 60 + 30);           // M:S
  EXPECT_EQ(seconds_of("1:30:00"), 90 * 60);              // H:M:S
  EXPECT_EQ(seconds_of("2-00:00:00"), 2 * 86400);         // D-H:M:S
  EXPECT_EQ(seconds_of("1-12"), 36 * 3600);               // D-H
  EXPECT_EQ(seconds_of("1-12:30"), 36 * 3600 + 30 * 60);  // D-H:M
  EXPECT_EQ(seconds_of("0:05"), 5);
}

TEST(ParseDuration, NumbersWithUnits) {
  EXPECT_EQ(seconds_of("90m"), 90 * 60);
  EXPECT_EQ(seconds_of("45s"), 45);
  EXPECT_EQ(seconds_of("1.5h"), 5400);
  EXPECT_EQ(seconds_of("2d"), 2 * 86400);
}

TEST(ParseDuration, FieldsOutOfRangeAreRefused) {
  EXPECT_EQ(error_of("1:60:00"), "invalid duration \"1:60:00\": minutes must be below 60");
  EXPECT_EQ(error_of("10:75"), "invalid duration \"10:75\": seconds must be below 60");
  EXPECT_EQ(error_of("1-24:00:00"),
            "invalid duration \"1-24:00:00\": hours after a day count must be below 24");
}

TEST(ParseDuration, MalformedInputIsQuoted) {
  EXPECT_EQ(error_of(""), "invalid duration \"\": empty");
  EXPECT_EQ(error_of("-5"), "invalid duration \"-5\": a duration cannot be negative");
  EXPECT_EQ(error_of("1:2:3:4"),
            "invalid duration \"1:2:3:4\": too many ':' fields (at most H:M:S)");
  EXPECT_NE(error_of("abc").find("\"abc\""), std::string::npos);
  EXPECT_NE(error_of("1::2").find("expected M, M:S"), std::string::npos);
  EXPECT_NE(error_of("xm").find("expected a number before the unit"), std::string::npos);
  EXPECT_NE(error_of("x-1:00").find("whole days"), std::string::npos);
  EXPECT_NE(error_of("99999999999d").find("longer than 100 years"), std::string::npos);
  EXPECT_NE(error_of("999999999999").find("longer than 100 years"), std::string::npos);
}

TEST(FormatDuration, WritesSlurmsForm) {
  EXPECT_EQ(format_duration(std::chrono::seconds(5)), "0:05");
  EXPECT_EQ(format_duration(std::chrono::seconds(5400)), "1:30:00");
  EXPECT_EQ(format_duration(std::chrono::seconds(2 * 86400)), "2-00:00:00");
}

TEST(FormatDuration, RoundTripsThroughTheParser) {
  for (std::int64_t s : {0, 59, 61, 3599, 3600, 86399, 86400, 90061, 864000}) {
    std::string text = format_duration(std::chrono::seconds(s));
    EXPECT_EQ(seconds_of(text), s) << text;
  }
}

}  // namespace
}  // namespace loom
