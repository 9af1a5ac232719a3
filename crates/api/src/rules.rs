//! The rules the validators enforce, stated once for the OpenAPI document: regular expressions
//! (in the syntax JSON Schema and ECMA-262 share) and lists of allowed values, with the schema
//! each field takes. The validators in [`crate::validate`] and the services use these same lists,
//! and the tests below hold every pattern to its validator, so the document cannot drift.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, RefOr, Schema};

use crate::validate::{MAX_ARTIFACT_ID_LEN, MAX_SITES, MAX_TEXT_BYTES};

/// What `char::is_whitespace` (and so `str::trim`) treats as white space, as a regex class body.
/// A test checks it against every `char`.
pub const WHITESPACE_CLASS: &str =
    r"\t\n\u000B\u000C\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// [`crate::validate::text`]: at least one character that is not white space, no NUL.
pub fn text_pattern() -> String {
    format!(r"^[^\u0000]*[^\u0000{WHITESPACE_CLASS}][^\u0000]*$")
}

/// [`crate::validate::artifact_id`].
pub fn artifact_id_pattern() -> String {
    format!(
        "^[A-Za-z0-9][A-Za-z0-9._-]{{0,{}}}$",
        MAX_ARTIFACT_ID_LEN - 1
    )
}

/// [`crate::machines::word`]: names of groups, commands, profiles, ranks and metadata keys.
pub fn word_pattern() -> String {
    format!("^[A-Za-z0-9_.-]{{1,{}}}$", crate::machines::MAX_NAME_LEN)
}

/// [`crate::machines::template_name`].
pub const TEMPLATE_NAME_PATTERN: &str = "^[a-z0-9-]{1,64}$";

/// [`crate::validate::mac`]: six pairs of hex digits separated by `:` or `-`.
pub const MAC_PATTERN: &str = "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$";

/// [`crate::machines::machine_name`]: one host name label (any case; stored lowercase).
pub const MACHINE_NAME_PATTERN: &str = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$";

/// [`crate::validate::printable`]: no control character (Unicode `Cc`).
pub const PRINTABLE_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// No NUL (free text bounded in bytes: descriptions, metadata values).
pub const NO_NUL_PATTERN: &str = r"^[^\u0000]*$";

/// [`crate::actions::check_run`]'s `user`.
pub const RUN_USER_PATTERN: &str = "^[A-Za-z0-9_.-]{1,32}$";

/// `pattern`, or the empty string.
pub fn or_empty(pattern: &str) -> String {
    format!("^$|{pattern}")
}

/// The patterns above as functions, for tables that take a `fn() -> String`.
pub fn template_name_pattern() -> String {
    TEMPLATE_NAME_PATTERN.into()
}
pub fn mac_pattern() -> String {
    MAC_PATTERN.into()
}

/// What `GET /api/sshkey?algorithm=` takes: empty (the default) or one of [`SSH_KEY_ALGORITHMS`].
pub const SSH_KEY_ALGORITHM_NAMES: &[&str] = &[
    "",
    "ed25519",
    "ssh-ed25519",
    "ecdsa",
    "ecdsa-p256",
    "p256",
    "ecdsa-sha2-nistp256",
    "ecdsa-p384",
    "p384",
    "ecdsa-sha2-nistp384",
    "rsa",
    "rsa-3072",
    "ssh-rsa",
    "rsa-4096",
];

const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";

/// [`crate::validate::ipv4_range`]: an IPv4 address with an optional `/prefix` (0 to 32).
pub fn ipv4_range_pattern() -> String {
    format!(r"^{OCTET}(\.{OCTET}){{3}}(/0*([0-9]|[12][0-9]|3[0-2]))?$")
}

/// A boot medium's label (the builders' `validate_label`): words of letters, digits, `.`, `_`,
/// `-` joined by single spaces, with [`LABEL_MAX_LEN`].
pub const LABEL_PATTERN: &str = "^[A-Za-z0-9._-]+( [A-Za-z0-9._-]+)*$";
pub const LABEL_MAX_LEN: usize = 32;

/// What `GET /api/sshkey?algorithm=` takes (any case), and the algorithm each names.
pub const SSH_KEY_ALGORITHMS: &[(&str, &str)] = &[
    ("ed25519", "ed25519"),
    ("ssh-ed25519", "ed25519"),
    ("ecdsa", "ecdsa-p256"),
    ("ecdsa-p256", "ecdsa-p256"),
    ("p256", "ecdsa-p256"),
    ("ecdsa-sha2-nistp256", "ecdsa-p256"),
    ("ecdsa-p384", "ecdsa-p384"),
    ("p384", "ecdsa-p384"),
    ("ecdsa-sha2-nistp384", "ecdsa-p384"),
    ("rsa", "rsa-3072"),
    ("rsa-3072", "rsa-3072"),
    ("ssh-rsa", "rsa-3072"),
    ("rsa-4096", "rsa-4096"),
];

/// `POST /api/syslinuxs` `fragment`.
pub const SYSLINUX_FRAGMENTS: &[&str] = &["ldlinux.c32", "isolinux.bin", "isohdpfx.bin"];

/// `POST /api/grubs`: `platform` (GRUB's own names are taken too), `architecture`, `extension`,
/// `fragment`.
pub const GRUB_PLATFORMS: &[&str] = &["efi", "x86_64-efi", "i386-efi"];
pub const GRUB_ARCHITECTURES: &[&str] = &["x64", "x86"];
pub const GRUB_EXTENSIONS: &[&str] = &["efi"];
pub const GRUB_FRAGMENTS: &[&str] = &["img", "efi"];

/// [`crate::machines::firmware`].
pub const FIRMWARES: &[&str] = &["bios", "uefi"];

/// A string schema; `describe` keeps the field's own documentation.
fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn done(object: ObjectBuilder) -> RefOr<Schema> {
    RefOr::T(Schema::Object(object.build()))
}

/// A string of one of `values`.
pub fn one_of(values: &[&str]) -> RefOr<Schema> {
    done(string().enum_values(Some(values.iter().copied())))
}

/// The same schema, also taking `null` (an `Option` field: serde takes `null` as absent).
fn nullable(schema: RefOr<Schema>) -> RefOr<Schema> {
    match schema {
        RefOr::T(Schema::Object(mut o)) => {
            if let SchemaType::Type(t) = o.schema_type {
                o.schema_type = SchemaType::Array(vec![t, Type::Null]);
            }
            RefOr::T(Schema::Object(o))
        }
        RefOr::T(Schema::Array(mut a)) => {
            if let SchemaType::Type(t) = a.schema_type {
                a.schema_type = SchemaType::Array(vec![t, Type::Null]);
            }
            RefOr::T(Schema::Array(a))
        }
        other => RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(other)
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .build(),
        )),
    }
}

fn array(items: impl Into<RefOr<Schema>>, max: usize) -> ArrayBuilder {
    let items: RefOr<Schema> = items.into();
    ArrayBuilder::new().items(items).max_items(Some(max))
}

fn integer(min: u64, max: u64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
}

/// At most `max` bytes (ASCII: characters) matching `pattern`.
fn bounded(pattern: impl Into<String>, max: usize) -> ObjectBuilder {
    string().max_length(Some(max)).pattern(Some(pattern.into()))
}

/// Schemas for `#[schema(schema_with = ...)]` on the input types' fields.
pub mod schema {
    use super::*;
    use crate::actions::{
        MAX_CONCURRENCY, MAX_DESCRIPTION_BYTES, MAX_MEMBERS, MAX_SCRIPT_BYTES, MAX_SUMMARY_BYTES,
        MAX_TIMEOUT_SECONDS, MAX_VARIANTS,
    };
    use crate::machines::{
        MAX_INVENTORY_ITEMS, MAX_INVENTORY_TEXT, MAX_LIST_ITEMS, MAX_METADATA_KEYS,
        MAX_METADATA_VALUE_BYTES, MAX_TEMPLATES,
    };

    pub fn word() -> RefOr<Schema> {
        done(string().pattern(Some(word_pattern())))
    }
    pub fn word_nullable() -> RefOr<Schema> {
        nullable(word())
    }
    /// A name, `""` (clears it) or `null` (keeps it).
    pub fn word_or_empty_nullable() -> RefOr<Schema> {
        nullable(done(string().pattern(Some(or_empty(&word_pattern())))))
    }
    pub fn machine_name_or_empty_nullable() -> RefOr<Schema> {
        nullable(done(string().pattern(Some(or_empty(MACHINE_NAME_PATTERN)))))
    }
    pub fn artifact_id_nullable() -> RefOr<Schema> {
        nullable(artifact_id())
    }
    pub fn mac_nullable() -> RefOr<Schema> {
        nullable(mac())
    }
    pub fn firmware() -> RefOr<Schema> {
        one_of(FIRMWARES)
    }
    pub fn firmware_or_empty_nullable() -> RefOr<Schema> {
        nullable(one_of(&["bios", "uefi", ""]))
    }
    /// An IPv4 or IPv6 address, `""` or `null`.
    pub fn ip_or_empty_nullable() -> RefOr<Schema> {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv4))))
                .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6))))
                .item(string().max_length(Some(0)))
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .description(Some("An IPv4 or IPv6 address; `\"\"` clears it."))
                .build(),
        ))
    }
    /// Ranks and groups of a machine ([`crate::machines::words`]).
    pub fn words_nullable() -> RefOr<Schema> {
        nullable(RefOr::T(Schema::Array(
            array(string().pattern(Some(word_pattern())), MAX_LIST_ITEMS).build(),
        )))
    }
    /// [`crate::machines::metadata`].
    pub fn metadata() -> RefOr<Schema> {
        done(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(string().pattern(Some(word_pattern())).build()))
                .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
                    bounded(NO_NUL_PATTERN, MAX_METADATA_VALUE_BYTES).build(),
                )))))
                .max_properties(Some(MAX_METADATA_KEYS)),
        )
    }
    pub fn metadata_nullable() -> RefOr<Schema> {
        nullable(metadata())
    }
    /// A profile's templates by name ([`TEMPLATE_NAME_PATTERN`], at most 32), each MiniJinja.
    pub fn templates() -> RefOr<Schema> {
        done(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(string().pattern(Some(TEMPLATE_NAME_PATTERN)).build()))
                .additional_properties(Some(AdditionalProperties::RefOr(text())))
                .max_properties(Some(MAX_TEMPLATES))
                .description(Some(
                    "Each a MiniJinja template that must compile, with the text rules.",
                )),
        )
    }
    /// A template that may be left out or `""`.
    pub fn text_or_empty_nullable() -> RefOr<Schema> {
        nullable(done(
            string()
                .max_length(Some(MAX_TEXT_BYTES))
                .pattern(Some(or_empty(&text_pattern()))),
        ))
    }
    /// [`crate::validate::printable`] with the inventory's bound.
    pub fn inventory_text() -> RefOr<Schema> {
        done(bounded(PRINTABLE_PATTERN, MAX_INVENTORY_TEXT))
    }
    /// A disk's name: not empty, printable.
    pub fn inventory_name() -> RefOr<Schema> {
        done(bounded(PRINTABLE_PATTERN, MAX_INVENTORY_TEXT).min_length(Some(1)))
    }
    pub fn cpu_count() -> RefOr<Schema> {
        done(integer(1, 65_536))
    }
    pub fn disks() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            array(
                <crate::machines::InventoryDisk as utoipa::PartialSchema>::schema(),
                MAX_INVENTORY_ITEMS,
            )
            .build(),
        ))
    }
    pub fn nics() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            array(
                <crate::machines::InventoryNic as utoipa::PartialSchema>::schema(),
                MAX_INVENTORY_ITEMS,
            )
            .build(),
        ))
    }
    /// A group's or command's description.
    pub fn description_nullable() -> RefOr<Schema> {
        nullable(done(bounded(NO_NUL_PATTERN, MAX_DESCRIPTION_BYTES)))
    }
    pub fn summary_nullable() -> RefOr<Schema> {
        nullable(done(bounded(NO_NUL_PATTERN, MAX_SUMMARY_BYTES)))
    }
    /// A command's script: not blank, no NUL, at most 64 KiB.
    pub fn command_script() -> RefOr<Schema> {
        done(
            string()
                .min_length(Some(1))
                .max_length(Some(MAX_SCRIPT_BYTES))
                .pattern(Some(text_pattern())),
        )
    }
    pub fn variants() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            // `Variant` is registered by the rows that list it.
            array(
                RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Variant")),
                MAX_VARIANTS,
            )
            .description(Some("At most one variant per rank."))
            .build(),
        ))
    }
    /// Machines or groups by id or name ([`crate::actions::refs`]).
    pub fn refs() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            array(string().pattern(Some(word_pattern())), MAX_MEMBERS).build(),
        ))
    }
    /// A group's `match.ranks`.
    pub fn ranks() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            array(string().pattern(Some(word_pattern())), MAX_LIST_ITEMS).build(),
        ))
    }
    pub fn run_user_nullable() -> RefOr<Schema> {
        nullable(done(string().pattern(Some(RUN_USER_PATTERN))))
    }
    pub fn private_key_nullable() -> RefOr<Schema> {
        nullable(done(string().max_length(Some(16 * 1024)).description(
            Some(
                "An unencrypted OpenSSH private key, at most 16 KiB; required for script commands.",
            ),
        )))
    }
    pub fn concurrency_nullable() -> RefOr<Schema> {
        nullable(done(integer(1, u64::from(MAX_CONCURRENCY))))
    }
    pub fn timeout_seconds_nullable() -> RefOr<Schema> {
        nullable(done(integer(1, u64::from(MAX_TIMEOUT_SECONDS))))
    }
    /// Script `sites`, which may be `null` (absent: a `PUT` keeps them).
    pub fn sites_nullable() -> RefOr<Schema> {
        nullable(sites())
    }

    pub fn text() -> RefOr<Schema> {
        done(
            string()
                .min_length(Some(1))
                .max_length(Some(MAX_TEXT_BYTES))
                .pattern(Some(text_pattern()))
                .description(Some(format!(
                    "Not blank, no NUL, at most {} KiB of UTF-8.",
                    MAX_TEXT_BYTES / 1024
                ))),
        )
    }

    pub fn artifact_id() -> RefOr<Schema> {
        done(
            string()
                .pattern(Some(artifact_id_pattern()))
                .description(Some("The site (a distributor's artifact id).")),
        )
    }

    /// A distributor `PUT`'s optional `artifactId`: the site's id, or the tutorial's row number.
    pub fn site_check() -> RefOr<Schema> {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(string().pattern(Some(artifact_id_pattern())))
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .build(),
        ))
    }

    pub fn mac() -> RefOr<Schema> {
        done(string().pattern(Some(MAC_PATTERN)))
    }

    pub fn ipv4_range() -> RefOr<Schema> {
        done(
            string()
                .pattern(Some(ipv4_range_pattern()))
                .description(Some("An IPv4 network like 192.168.1.0/24, or one address.")),
        )
    }

    /// An IPv4 or IPv6 address.
    pub fn ip() -> RefOr<Schema> {
        RefOr::T(Schema::OneOf(
            OneOfBuilder::new()
                .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv4))))
                .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6))))
                .description(Some("An IPv4 or IPv6 address."))
                .build(),
        ))
    }

    pub fn label() -> RefOr<Schema> {
        done(
            string()
                .min_length(Some(1))
                .max_length(Some(LABEL_MAX_LEN))
                .pattern(Some(LABEL_PATTERN)),
        )
    }

    /// [`crate::validate::sites`]: the sites a script or an artifact is marked for.
    pub fn sites() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(string().pattern(Some(artifact_id_pattern())))
                .max_items(Some(MAX_SITES))
                .unique_items(true)
                .description(Some(
                    "The sites (artifact ids) whose site-bound node tokens may read this; empty or absent: every site.",
                ))
                .build(),
        ))
    }

    /// A list of names ([`word_pattern`]).
    pub fn words() -> RefOr<Schema> {
        RefOr::T(Schema::Array(
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(string().pattern(Some(word_pattern())))
                .build(),
        ))
    }

    pub fn syslinux_fragment() -> RefOr<Schema> {
        one_of(SYSLINUX_FRAGMENTS)
    }
    pub fn grub_platform() -> RefOr<Schema> {
        one_of(GRUB_PLATFORMS)
    }
    pub fn grub_architecture() -> RefOr<Schema> {
        one_of(GRUB_ARCHITECTURES)
    }
    pub fn grub_extension() -> RefOr<Schema> {
        one_of(GRUB_EXTENSIONS)
    }
    pub fn grub_fragment() -> RefOr<Schema> {
        one_of(GRUB_FRAGMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate;

    fn matches(pattern: &str, value: &str) -> bool {
        regex::Regex::new(pattern).expect(pattern).is_match(value)
    }

    #[test]
    fn algorithm_names_are_the_table_and_empty() {
        let table: Vec<&str> = SSH_KEY_ALGORITHMS.iter().map(|(name, _)| *name).collect();
        assert_eq!(SSH_KEY_ALGORITHM_NAMES, [&[""][..], &table].concat());
    }

    #[test]
    fn whitespace_class_is_what_trim_removes() {
        let class = regex::Regex::new(&format!("^[{WHITESPACE_CLASS}]$")).expect("class");
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(
                class.is_match(c.encode_utf8(&mut [0; 4])),
                c.is_whitespace(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn patterns_accept_exactly_what_the_validators_accept() {
        let samples = [
            "",
            " ",
            "\u{3000}",
            "\u{FEFF}",
            "\t\n",
            "a",
            " a ",
            "a\0b",
            "\u{1}",
            "#!ipxe\nexit",
            "lab",
            "lab.a",
            "-lab",
            "Lab_1-x.y",
            "a b",
            "a/b",
            "ä",
            &"x".repeat(64),
            &"x".repeat(65),
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "52:54-00:12:34:5g",
            "52:54:00:12:34",
            "192.168.1.0/24",
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/032",
            "1.2.3",
            "01.2.3.4",
            "256.1.1.1",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "0.0.0.0/0",
            "a-",
            "a-b",
            &"x".repeat(63),
            &"x".repeat(32),
            &"x".repeat(33),
            "\u{7f}",
            "\u{9f}",
            "\u{a0}",
            "x\u{85}",
            "user.name_1",
        ];
        for s in samples {
            let check = |pattern: &str, valid: bool, name: &str| {
                assert_eq!(matches(pattern, s), valid, "{name} on {s:?}");
            };
            check(&text_pattern(), validate::text("f", s).is_ok(), "text");
            check(
                &artifact_id_pattern(),
                validate::artifact_id("f", s).is_ok(),
                "artifact id",
            );
            check(
                &word_pattern(),
                crate::machines::word("f", s).is_ok(),
                "word",
            );
            check(
                TEMPLATE_NAME_PATTERN,
                crate::machines::template_name("f", s).is_ok(),
                "template",
            );
            check(MAC_PATTERN, validate::mac("f", s).is_ok(), "mac");
            check(
                MACHINE_NAME_PATTERN,
                crate::machines::machine_name("f", s).is_ok(),
                "machine name",
            );
            // Bounds are maxLength (checked by JSON Schema apart from the pattern).
            check(
                PRINTABLE_PATTERN,
                validate::printable("f", s, usize::MAX).is_ok(),
                "printable",
            );
            check(NO_NUL_PATTERN, !s.contains('\0'), "no NUL");
            check(
                RUN_USER_PATTERN,
                crate::actions::check_run(
                    &crate::actions::RunInput {
                        machines: vec!["m".into()],
                        user: Some(s.into()),
                        ..Default::default()
                    },
                    false,
                )
                .is_ok(),
                "run user",
            );
            check(
                &ipv4_range_pattern(),
                validate::ipv4_range("f", s).is_ok(),
                "range",
            );
        }
    }
}
