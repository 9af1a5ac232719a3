//! Paging, sorting and searching of registry lists, as the original API's `moleculer-db` did:
//! `?page=1&pageSize=10&sort=-createdAt&search=foo&searchFields=text`.

use crate::error::ApiError;
use crate::proto::ListRequest;

pub const DEFAULT_PAGE_SIZE: u32 = 10;
pub const MAX_PAGE_SIZE: u32 = 100;
/// Far beyond any real registry; bounds the OFFSET a client can make the database skip.
pub const MAX_PAGE: u32 = 1_000_000;
pub const MAX_SEARCH_LEN: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListParams {
    pub page: u32,
    pub page_size: u32,
    pub sort: Vec<SortKey>,
    pub search: Option<String>,
    pub search_fields: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub field: String,
    pub descending: bool,
}

impl Default for ListParams {
    fn default() -> Self {
        ListParams {
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
            sort: Vec::new(),
            search: None,
            search_fields: Vec::new(),
        }
    }
}

fn parse_bounded(field: &str, value: &str, min: u32, max: u32) -> Result<u32, ApiError> {
    let n: u32 = value.trim().parse().map_err(|_| {
        ApiError::invalid(field, format!("must be a whole number from {min} to {max}"))
    })?;
    if n < min || n > max {
        return Err(ApiError::invalid(
            field,
            format!("must be a whole number from {min} to {max}"),
        ));
    }
    Ok(n)
}

/// What [`split_list`] takes apart into items that each match `item`, as a regular expression:
/// pieces separated by `,` or ` `, each empty, blank, or `item` with white space around it.
fn list_pattern(item: &str) -> String {
    let blank = format!("[{}]*", crate::rules::WHITESPACE_CLASS.replace(' ', ""));
    let piece = format!("({blank}|{blank}{item}{blank})");
    format!("^{piece}([, ]{piece})*$")
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ListParams {
    /// Parses the list query string. `ignored` names parameters handled elsewhere (`token`);
    /// any other unknown parameter is refused so that a typo (`pagesize`) is not silently ignored.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        ignored: &[&str],
    ) -> Result<ListParams, ApiError> {
        let mut params = ListParams::default();
        for (key, value) in pairs {
            match key {
                "page" => params.page = parse_bounded("page", value, 1, MAX_PAGE)?,
                "pageSize" => {
                    params.page_size = parse_bounded("pageSize", value, 1, MAX_PAGE_SIZE)?
                }
                "sort" => {
                    params.sort = split_list(value)
                        .into_iter()
                        .map(|s| match s.strip_prefix('-') {
                            Some(field) => SortKey {
                                field: field.to_owned(),
                                descending: true,
                            },
                            None => SortKey {
                                field: s,
                                descending: false,
                            },
                        })
                        .collect()
                }
                "search" => {
                    if value.len() > MAX_SEARCH_LEN {
                        return Err(ApiError::invalid(
                            "search",
                            format!("must be at most {MAX_SEARCH_LEN} bytes"),
                        ));
                    }
                    params.search = (!value.is_empty()).then(|| value.to_owned());
                }
                "searchFields" => params.search_fields = split_list(value),
                other if ignored.contains(&other) => {}
                other => return Err(ApiError::invalid(
                    other,
                    "unknown query parameter (expected page, pageSize, sort, search, searchFields)",
                )),
            }
        }
        Ok(params)
    }

    /// Checks sort and search fields against the registry's columns (in their REST spelling).
    pub fn check_fields(&self, sortable: &[&str], searchable: &[&str]) -> Result<(), ApiError> {
        for key in &self.sort {
            if !sortable.contains(&key.field.as_str()) {
                return Err(ApiError::invalid(
                    "sort",
                    format!(
                        "cannot sort by {:?} (sortable: {})",
                        key.field,
                        sortable.join(", ")
                    ),
                ));
            }
        }
        for field in &self.search_fields {
            if !searchable.contains(&field.as_str()) {
                return Err(ApiError::invalid(
                    "searchFields",
                    format!(
                        "cannot search {:?} (searchable: {})",
                        field,
                        searchable.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn total_pages(&self, total: u64) -> u64 {
        total.div_ceil(u64::from(self.page_size))
    }

    pub fn to_proto(&self) -> ListRequest {
        ListRequest {
            page: self.page,
            page_size: self.page_size,
            sort: self
                .sort
                .iter()
                .map(|k| {
                    if k.descending {
                        format!("-{}", k.field)
                    } else {
                        k.field.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            search: self.search.clone().unwrap_or_default(),
            search_fields: self.search_fields.clone(),
        }
    }

    /// Re-validates a request that came over the bus: a service trusts no caller's bounds.
    pub fn from_proto(req: &ListRequest) -> Result<ListParams, ApiError> {
        let page = req.page.to_string();
        let page_size = req.page_size.to_string();
        let fields = req.search_fields.join(",");
        let mut pairs = vec![
            ("page", page.as_str()),
            ("pageSize", page_size.as_str()),
            ("sort", req.sort.as_str()),
            ("search", req.search.as_str()),
            ("searchFields", fields.as_str()),
        ];
        if req.page == 0 {
            pairs.retain(|(k, _)| *k != "page");
        }
        if req.page_size == 0 {
            pairs.retain(|(k, _)| *k != "pageSize");
        }
        ListParams::from_query(pairs, &[])
    }
}

/// What each list may be sorted and searched by (REST names), and its order when none is asked:
/// the contract the services' listings enforce and the OpenAPI document states (`sort` and
/// `searchFields` patterns), so the two cannot drift.
#[derive(Clone, Copy, Debug)]
pub struct ListFields {
    pub sortable: &'static [&'static str],
    pub searchable: &'static [&'static str],
    /// Used when the request names no sort.
    pub default_sort: &'static str,
}

impl ListFields {
    /// A regular expression `sort` matches: sortable fields, each with an optional leading
    /// `-`, separated by commas or spaces (empty means the default order).
    pub fn sort_pattern(&self) -> String {
        list_pattern(&format!("-?({})", self.sortable.join("|")))
    }

    /// A regular expression `searchFields` matches: searchable fields separated by commas or
    /// spaces.
    pub fn search_fields_pattern(&self) -> String {
        list_pattern(&format!("({})", self.searchable.join("|")))
    }
}

/// The lists of every collection.
pub mod fields {
    use super::ListFields;

    /// The five text registries (`/api/mainscripts`, ...).
    pub const SCRIPTS: ListFields = ListFields {
        sortable: &["id", "text", "createdAt", "updatedAt"],
        searchable: &["text", "id"],
        default_sort: "createdAt",
    };

    /// `/api/sshkeys`.
    pub const SSHKEYS: ListFields = ListFields {
        sortable: &[
            "id",
            "artifactId",
            "algorithm",
            "comment",
            "createdAt",
            "updatedAt",
        ],
        searchable: &[
            "text",
            "artifactId",
            "algorithm",
            "fingerprint",
            "comment",
            "id",
        ],
        default_sort: "createdAt",
    };

    /// `/api/distributors`.
    pub const DISTRIBUTORS: ListFields = ListFields {
        sortable: &[
            "id",
            "artifactId",
            "hostname",
            "lastSeen",
            "createdAt",
            "updatedAt",
        ],
        searchable: &["artifactId", "hostname", "interfaces", "id"],
        default_sort: "createdAt",
    };

    /// `/api/localnodes`.
    pub const LOCALNODES: ListFields = ListFields {
        sortable: &[
            "id",
            "ip",
            "artifactId",
            "hostname",
            "lastSeen",
            "createdAt",
            "updatedAt",
        ],
        searchable: &["ip", "artifactId", "mac", "hostname", "id"],
        default_sort: "createdAt",
    };

    /// `/api/ipxes`, `/api/grubs`, `/api/syslinuxs`, `/api/isos`.
    pub const ARTIFACTS: ListFields = ListFields {
        sortable: &["id", "status", "size", "createdAt", "updatedAt"],
        searchable: &["id", "status", "inputs", "error"],
        default_sort: "createdAt",
    };

    /// `/api/machines`.
    pub const MACHINES: ListFields = ListFields {
        sortable: &[
            "id",
            "mac",
            "name",
            "artifactId",
            "state",
            "profile",
            "ip",
            "createdAt",
            "updatedAt",
        ],
        searchable: &[
            "mac",
            "name",
            "artifactId",
            "state",
            "profile",
            "ip",
            "firmware",
            "ranks",
            "groups",
            "id",
        ],
        default_sort: "createdAt",
    };

    /// `/api/profiles`.
    pub const PROFILES: ListFields = ListFields {
        sortable: &["name", "createdAt", "updatedAt"],
        searchable: &["name"],
        default_sort: "name",
    };

    /// `/api/groups`.
    pub const GROUPS: ListFields = ListFields {
        sortable: &["name", "createdAt", "updatedAt"],
        searchable: &["name", "description", "members"],
        default_sort: "name",
    };

    /// `/api/commands`.
    pub const COMMANDS: ListFields = ListFields {
        sortable: &["name", "createdAt", "updatedAt"],
        searchable: &["name", "summary", "description"],
        default_sort: "name",
    };

    /// `/api/runs`.
    pub const RUNS: ListFields = ListFields {
        sortable: &["command", "actor", "status", "createdAt"],
        searchable: &["command", "actor", "status"],
        default_sort: "createdAt",
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_patterns_accept_exactly_what_the_parser_accepts() {
        let fields = fields::SCRIPTS;
        let (sort, search) = (
            regex::Regex::new(&fields.sort_pattern()).expect("sort pattern"),
            regex::Regex::new(&fields.search_fields_pattern()).expect("searchFields pattern"),
        );
        for value in [
            "",
            " ",
            ",",
            "id",
            "-id",
            "id,-text",
            "id -text",
            " id , text ",
            "\tid",
            "id\tid",
            "-",
            "- id",
            "--id",
            "idx",
            "id,,text",
            "\u{3000}",
            "text,createdAt",
            "-createdAt ",
        ] {
            let accepted = |key| {
                ListParams::from_query([(key, value)], &[])
                    .and_then(|p| p.check_fields(fields.sortable, fields.searchable))
                    .is_ok()
            };
            assert_eq!(sort.is_match(value), accepted("sort"), "sort {value:?}");
            assert_eq!(
                search.is_match(value),
                accepted("searchFields"),
                "searchFields {value:?}"
            );
        }
    }

    use super::*;

    #[test]
    fn defaults_and_full_query() {
        assert_eq!(
            ListParams::from_query([], &[]).ok(),
            Some(ListParams::default())
        );
        let p = ListParams::from_query(
            [
                ("page", "3"),
                ("pageSize", "100"),
                ("sort", "-createdAt,text"),
                ("search", "ipxe"),
                ("searchFields", "text"),
                ("token", "x"),
            ],
            &["token"],
        )
        .expect("valid query");
        assert_eq!((p.page, p.page_size), (3, 100));
        assert_eq!(p.sort.len(), 2);
        assert!(p.sort[0].descending && !p.sort[1].descending);
        assert_eq!(ListParams::from_proto(&p.to_proto()).ok(), Some(p));
    }

    #[test]
    fn bad_paging_names_the_field() {
        for (key, value) in [
            ("page", "0"),
            ("page", "-1"),
            ("page", "x"),
            ("pageSize", "101"),
            ("pageSize", "0"),
            ("pageSize", "1e3"),
        ] {
            let err = ListParams::from_query([(key, value)], &[]).expect_err(value);
            assert_eq!(err.field.as_deref(), Some(key));
        }
        let err = ListParams::from_query([("pagesize", "5")], &[]).expect_err("typo");
        assert_eq!(err.field.as_deref(), Some("pagesize"));
    }

    #[test]
    fn unknown_sort_and_search_fields_are_refused() {
        let p = ListParams::from_query([("sort", "-password")], &[]).expect("parses");
        let err = p
            .check_fields(&["createdAt"], &["text"])
            .expect_err("bad sort");
        assert_eq!(err.field.as_deref(), Some("sort"));
        let p = ListParams::from_query([("searchFields", "id;drop")], &[]).expect("parses");
        let err = p
            .check_fields(&["createdAt"], &["text"])
            .expect_err("bad field");
        assert_eq!(err.field.as_deref(), Some("searchFields"));
    }

    #[test]
    fn total_pages_rounds_up() {
        let p = ListParams::default();
        assert_eq!(p.total_pages(0), 0);
        assert_eq!(p.total_pages(10), 1);
        assert_eq!(p.total_pages(11), 2);
    }
}
