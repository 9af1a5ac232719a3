//! A `/metrics` page parsed as OpenMetrics text (what Prometheus reads), for tests that assert
//! a series is there with a plausible value.

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

#[derive(Debug)]
pub struct Scrape(MetricsExposition<OpenMetricsType, OpenMetricsValue>);

impl Scrape {
    /// Parses a page; the error says where it is not OpenMetrics text.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let body = text
            .strip_suffix("# EOF\n")
            .ok_or("not openmetrics text: no `# EOF` line at the end")?;
        // Family by family: the parser's grammar runs the descriptors of a family without
        // samples (a series not used yet, which OpenMetrics allows) into the next family's.
        let mut families = Vec::new();
        for line in body.lines() {
            if line.starts_with("# HELP ") || families.is_empty() {
                families.push(String::new());
            }
            if let Some(family) = families.last_mut() {
                family.push_str(line);
                family.push('\n');
            }
        }
        let mut all = MetricsExposition::new();
        for family in families {
            let parsed =
                openmetrics_parser::openmetrics::parse_openmetrics(&format!("{family}# EOF\n"))
                    .map_err(|e| format!("not openmetrics text: {e:?} in\n{family}"))?;
            all.families.extend(parsed.families);
        }
        Ok(Scrape(all))
    }

    /// Whether the family (`bootfleet_http_requests`, without `_total`) is on the page.
    pub fn has(&self, family: &str) -> bool {
        self.0.families.contains_key(family)
    }

    /// The sum, over the family's samples whose labels include every one of `labels`, of the
    /// counter's value (a counter) or of the number of observations (a histogram); `None` when
    /// the family is absent or no sample matches.
    pub fn total(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self.0.families.get(family)?;
        let mut sum = None;
        for sample in family.iter_samples() {
            let Ok(set) = sample.get_labelset() else {
                continue;
            };
            if !labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
            {
                continue;
            }
            let value = match &sample.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                _ => continue,
            };
            *sum.get_or_insert(0.0) += value;
        }
        sum
    }

    /// The label values the family's samples carry under `label`, sorted, once each.
    pub fn label_values(&self, family: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .0
            .families
            .get(family)
            .into_iter()
            .flat_map(|f| f.iter_samples())
            .filter_map(|s| {
                s.get_labelset()
                    .ok()
                    .and_then(|set| set.get_label_value(label).map(str::to_owned))
            })
            .collect();
        values.sort();
        values.dedup();
        values
    }
}
