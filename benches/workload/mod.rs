//! The engine comparison workload: generated first-match rules and leads,
//! shared by the build script (which writes the hand-written Rust baseline
//! for these rules into `OUT_DIR`) and `benches/engine.rs` (which writes the
//! same rules as a playbook, a zen-engine decision table and CEL programs).
//!
//! Every rule is `intent == "iK"` and 2 to 4 tests among `city in [3-6
//! cities]`, `guests >= N`, `budget < N`, `event_date within next N days` and
//! `consent.whatsapp`; the first rule that holds wins. About a tenth of each
//! lead field is missing. Standard library only: the build script uses it.

/// The rule counts measured.
pub const SIZES: [usize; 3] = [50, 1_000, 5_000];
/// Leads per run.
pub const LEADS: usize = 10_000;
/// Intents `i0`..`i9`.
pub const INTENTS: u8 = 10;
/// The cities rules list and leads give, as rules write them.
pub const CITIES: [&str; 24] = [
    "Goa",
    "Mumbai",
    "Pune",
    "Delhi",
    "Jaipur",
    "Udaipur",
    "Bengaluru",
    "Chennai",
    "Kochi",
    "Hyderabad",
    "Kolkata",
    "Shimla",
    "Agra",
    "Varanasi",
    "Amritsar",
    "Mysuru",
    "Ooty",
    "Munnar",
    "Manali",
    "Rishikesh",
    "Indore",
    "Bhopal",
    "Surat",
    "Nagpur",
];
/// The `within next N days` windows rules use.
pub const WINDOWS: [u32; 8] = [7, 14, 30, 60, 90, 120, 180, 365];

const RULE_SEED: u64 = 0x5eed_0003_f1a5_7a11;
const LEAD_SEED: u64 = 0x5eed_0004_1ead_0b0b;

/// One test of a rule.
#[derive(Clone, Debug)]
pub enum Test {
    /// Indices into [`CITIES`], ascending.
    CityIn(Vec<u8>),
    GuestsAtLeast(u32),
    BudgetBelow(u32),
    WithinNextDays(u32),
    Consent,
}

/// One rule: its intent and its other tests, in order.
#[derive(Clone, Debug)]
pub struct Rule {
    pub intent: u8,
    pub tests: Vec<Test>,
}

/// A lead as the workload draws it; the benchmark writes it as a lead.
#[derive(Clone, Debug)]
pub struct LeadSpec {
    pub intent: Option<u8>,
    /// Index into [`CITIES`], and how the lead writes its case.
    pub city: Option<(u8, u8)>,
    pub guests: Option<u32>,
    pub budget: Option<u32>,
    /// The event date, in days from today.
    pub event_in_days: Option<i32>,
    pub consent: bool,
}

/// A lead as hand-written Rust would hold it: typed, text already matched
/// to its city, the event date as days from today.
#[derive(Clone, Copy, Debug, Default)]
pub struct Typed {
    pub intent: Option<u8>,
    pub city: Option<u8>,
    pub guests: Option<f64>,
    pub budget: Option<f64>,
    pub event_in_days: Option<i32>,
    pub consent: bool,
}

impl LeadSpec {
    /// The lead as the baseline reads it.
    pub fn typed(&self) -> Typed {
        Typed {
            intent: self.intent,
            city: self.city.map(|(c, _)| c),
            guests: self.guests.map(f64::from),
            budget: self.budget.map(f64::from),
            event_in_days: self.event_in_days,
            consent: self.consent,
        }
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The rules of the `count`-rule playbook.
pub fn rules(count: usize) -> Vec<Rule> {
    let mut rng = Rng(RULE_SEED ^ count as u64);
    (0..count)
        .map(|_| {
            let intent = rng.below(u64::from(INTENTS)) as u8;
            let wanted = 2 + rng.below(3) as usize;
            let mut kinds: Vec<u64> = Vec::new();
            while kinds.len() < wanted {
                let k = rng.below(5);
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            let tests = kinds
                .into_iter()
                .map(|k| match k {
                    0 => {
                        let n = 3 + rng.below(4) as usize;
                        let mut cities: Vec<u8> = Vec::new();
                        while cities.len() < n {
                            let c = rng.below(CITIES.len() as u64) as u8;
                            if !cities.contains(&c) {
                                cities.push(c);
                            }
                        }
                        cities.sort_unstable();
                        Test::CityIn(cities)
                    }
                    1 => Test::GuestsAtLeast(50 + 25 * rng.below(24) as u32),
                    2 => Test::BudgetBelow(100_000 * (1 + rng.below(30) as u32)),
                    3 => Test::WithinNextDays(WINDOWS[rng.below(WINDOWS.len() as u64) as usize]),
                    _ => Test::Consent,
                })
                .collect();
            Rule { intent, tests }
        })
        .collect()
}

/// The leads, the same for every rule count.
pub fn leads() -> Vec<LeadSpec> {
    let mut rng = Rng(LEAD_SEED);
    (0..LEADS)
        .map(|_| {
            let present = |rng: &mut Rng| rng.chance(90);
            LeadSpec {
                intent: present(&mut rng).then(|| rng.below(u64::from(INTENTS)) as u8),
                city: present(&mut rng)
                    .then(|| (rng.below(CITIES.len() as u64) as u8, rng.below(4) as u8)),
                guests: present(&mut rng).then(|| 10 + rng.below(700) as u32),
                budget: present(&mut rng).then(|| 1_000 * (10 + rng.below(4_000) as u32)),
                event_in_days: present(&mut rng).then(|| rng.below(431) as i32 - 30),
                consent: rng.chance(60),
            }
        })
        .collect()
}

/// The hand-written baseline for `count` rules, as Rust source: a function
/// `baseline_<count>(&Typed) -> Option<u32>` that matches the intent, then
/// tries that intent's rules in order as an if-chain, and returns the index
/// of the first rule that holds.
pub fn baseline_source(count: usize) -> String {
    let rules = rules(count);
    let mut out = String::new();
    out.push_str(&format!(
        "/// The first of the {count} rules that holds for `l`, written out by hand.\n\
         #[allow(clippy::all)]\n\
         pub fn baseline_{count}(l: &Typed) -> Option<u32> {{\n    match l.intent {{\n"
    ));
    for intent in 0..INTENTS {
        out.push_str(&format!("        Some({intent}) => {{\n"));
        for (i, rule) in rules.iter().enumerate().filter(|(_, r)| r.intent == intent) {
            let tests: Vec<String> = rule
                .tests
                .iter()
                .map(|t| match t {
                    Test::CityIn(cities) => {
                        let alternatives: Vec<String> =
                            cities.iter().map(|c| c.to_string()).collect();
                        format!("matches!(l.city, Some({}))", alternatives.join(" | "))
                    }
                    Test::GuestsAtLeast(n) => format!("matches!(l.guests, Some(g) if g >= {n}.0)"),
                    Test::BudgetBelow(n) => format!("matches!(l.budget, Some(b) if b < {n}.0)"),
                    Test::WithinNextDays(n) => {
                        format!("matches!(l.event_in_days, Some(d) if (0..={n}).contains(&d))")
                    }
                    Test::Consent => "l.consent".to_string(),
                })
                .collect();
            out.push_str(&format!(
                "            if {} {{\n                return Some({i});\n            }}\n",
                tests.join(" && ")
            ));
        }
        out.push_str("            None\n        }\n");
    }
    out.push_str("        _ => None,\n    }\n}\n");
    out
}
