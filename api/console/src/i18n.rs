//! Console strings: one table per language, looked up by key. A key missing from a table
//! falls back to English (a unit test keeps the tables complete).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "en" => Some(Lang::En),
            "zh" => Some(Lang::Zh),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// The `lang` attribute of the page.
    pub fn html(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The first supported language of an `Accept-Language` header.
    pub fn from_accept(header: &str) -> Lang {
        for part in header.split(',') {
            let tag = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag.starts_with("zh") {
                return Lang::Zh;
            }
            if tag.starts_with("en") {
                return Lang::En;
            }
        }
        Lang::En
    }

    pub fn t(self, key: &'static str) -> &'static str {
        let table = match self {
            Lang::En => EN,
            Lang::Zh => ZH,
        };
        lookup(table, key)
            .or_else(|| lookup(EN, key))
            .unwrap_or(key)
    }
}

fn lookup(table: &'static [(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

pub const EN: &[(&str, &str)] = &[
    ("app", "Prognos"),
    ("sign_in", "Sign in"),
    ("sign_out", "Sign out"),
    ("user_name", "User name"),
    ("password", "Password"),
    ("bad_login", "Wrong user name or password."),
    ("signed_in_as", "Signed in as"),
    ("nav_fleet", "Fleet"),
    ("nav_alerts", "Alerts"),
    ("nav_tickets", "Tickets"),
    ("nav_board", "Board"),
    ("nav_jobs", "My jobs"),
    ("nav_dispatch", "Dispatch"),
    ("nav_parts", "Parts"),
    ("language", "Language"),
    ("fleet_title", "Fleet overview"),
    ("device", "Device"),
    ("serial", "Serial"),
    ("model", "Model"),
    ("batch", "Batch"),
    ("site", "Site"),
    ("region", "Region"),
    ("health", "Health"),
    ("healthy", "healthy"),
    ("watch", "watch"),
    ("alerting", "alerting"),
    ("open_alerts", "Active alerts"),
    ("open_tickets", "Open tickets"),
    ("rul", "RUL"),
    ("rul_interval", "RUL (interval)"),
    ("hours", "h"),
    ("filter", "Filter"),
    ("all", "all"),
    ("devices_shown", "devices shown"),
    ("sites_map", "Sites"),
    ("identity", "Identity"),
    ("firmware", "Firmware"),
    ("install_date", "Installed"),
    ("warranty_end", "Warranty until"),
    ("customer", "Customer"),
    ("criticality", "Criticality"),
    ("telemetry", "Telemetry"),
    ("range", "Range"),
    ("metrics", "Metrics"),
    ("show", "Show"),
    ("no_data", "No data in this range."),
    ("no_telemetry_access", "Your role may not read telemetry."),
    ("points", "points"),
    ("alert_history", "Alert history"),
    ("tickets", "Tickets"),
    ("alerts_title", "Alerts"),
    ("acknowledge", "Acknowledge"),
    ("analytics_title", "Reliability analytics"),
    ("nav_analytics", "Analytics"),
    ("group_by", "Group by"),
    ("weibull_title", "Weibull probability plot (fleet)"),
    ("mtbf_title", "MTBF and MTTR"),
    ("heatmap_title", "Failures by region and failure mode"),
    ("batches_title", "Defective batches"),
    ("surges_title", "Surge alerts"),
    ("kpi_title", "Provider KPIs"),
    ("accuracy_title", "Model accuracy"),
    ("no_failures", "No failures to plot yet."),
    (
        "life_days",
        "life (days), log scale; vertical: percent failed",
    ),
    ("group", "Group"),
    ("devices", "Devices"),
    ("failures", "Failures"),
    ("suspensions", "suspended"),
    ("mean_life_days", "Mean life (d)"),
    ("availability", "Availability"),
    ("failures_per_device_year", "Failures / device-year"),
    (
        "heatmap_note",
        "Darker: more failures per device-year of the region's devices.",
    ),
    ("flagged", "flagged"),
    ("recall_devices", "devices on the recall list"),
    ("download_csv", "Download CSV"),
    ("no_surges", "No surge raised."),
    ("week_of", "Week of"),
    ("baseline_per_week", "Baseline / week"),
    ("provider", "Provider"),
    ("first_time_fix", "First-time fix"),
    ("sla_compliance", "SLA met"),
    ("satisfaction", "Satisfaction"),
    ("parts_turnover", "Parts turnover / year"),
    ("predictive_tickets", "Predictive tickets"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("confirmed", "confirmed"),
    ("false_alarms", "false alarms"),
    ("other_cause", "other cause"),
    ("lead_days", "Lead (days)"),
    ("dispatch_title", "Dispatch board"),
    ("dispatch_result", "Dispatch result"),
    ("waiting_tickets", "Waiting for a technician"),
    (
        "nothing_to_dispatch",
        "No new or triaged ticket is waiting.",
    ),
    ("dispatch_selected", "Dispatch selected"),
    ("select_tickets", "Select at least one ticket."),
    ("technicians", "Technicians"),
    ("load", "Open jobs / daily capacity"),
    ("skills", "Skills"),
    ("home", "Home base"),
    ("inactive", "inactive"),
    ("assigned_n", "assigned"),
    ("unassigned_n", "not assigned"),
    ("parts", "Parts"),
    ("part_van", "in the van"),
    ("part_transfer", "transfer"),
    ("part_reserved", "reserved"),
    ("part_unavailable", "unavailable"),
    ("resolve", "Resolve"),
    ("failure_mode", "Failure mode"),
    ("state", "State"),
    ("severity", "Severity"),
    ("opened", "Opened"),
    ("evidence", "Evidence"),
    ("score", "Score"),
    ("ratio", "× limit"),
    ("ticket", "Ticket"),
    ("none", "none"),
    ("tickets_title", "Tickets"),
    ("board_title", "Ticket board"),
    ("queue", "Queue"),
    ("board", "Board"),
    ("priority", "Priority"),
    ("title", "Title"),
    ("technician", "Technician"),
    ("sla", "SLA"),
    ("sla_left", "left"),
    ("sla_overdue", "overdue"),
    ("sla_paused", "paused"),
    ("sla_stopped", "stopped"),
    ("sla_met", "met"),
    ("created", "Created"),
    ("timeline", "Timeline"),
    ("actions", "Actions"),
    ("move_to", "Move to"),
    ("note", "Note"),
    ("assign", "Assign"),
    ("candidates", "Candidates"),
    ("close_report", "Close with service report"),
    ("cause", "Cause"),
    ("fix", "Fix"),
    ("parts_used", "Parts used (SKU, quantity)"),
    ("signed_off_by", "Signed off by"),
    ("close_code", "Close code"),
    ("close", "Close ticket"),
    ("parts_needed", "Parts needed"),
    ("reservations", "Reserved parts"),
    ("description", "Description"),
    ("forbidden", "Forbidden"),
    (
        "forbidden_text",
        "You may not open this page (or it does not exist).",
    ),
    ("not_found", "Not found"),
    ("not_found_text", "There is nothing here."),
    ("error", "Error"),
    (
        "csrf_failed",
        "The form expired or was not sent from this console. Reload and try again.",
    ),
    ("done", "Done."),
    ("track_title", "Your service request"),
    ("track_code", "Tracking code"),
    ("track_state", "Status"),
    ("track_assigned", "A technician is assigned."),
    ("track_unassigned", "No technician assigned yet."),
    ("track_visit_by", "Visit expected by"),
    ("rate_title", "How did we do?"),
    ("rate_send", "Send rating"),
    ("rate_thanks", "Thank you for your rating."),
    (
        "rate_followup",
        "We are sorry. A follow-up visit has been opened.",
    ),
    (
        "rate_comment",
        "Comment (optional, no personal data please)",
    ),
    ("jobs_title", "My jobs"),
    ("no_jobs", "No open jobs."),
    ("navigate", "Navigate"),
    ("open_ticket", "Open"),
    ("st_new", "new"),
    ("st_triaged", "triaged"),
    ("st_assigned", "assigned"),
    ("st_en_route", "en route"),
    ("st_on_site", "on site"),
    ("st_waiting_parts", "waiting for parts"),
    ("st_resolved", "resolved"),
    ("st_closed", "closed"),
    ("st_cancelled", "cancelled"),
];

pub const ZH: &[(&str, &str)] = &[
    ("app", "Prognos"),
    ("sign_in", "登录"),
    ("sign_out", "退出"),
    ("user_name", "用户名"),
    ("password", "密码"),
    ("bad_login", "用户名或密码错误。"),
    ("signed_in_as", "当前用户"),
    ("nav_fleet", "设备总览"),
    ("nav_alerts", "告警"),
    ("nav_tickets", "工单"),
    ("nav_board", "看板"),
    ("nav_jobs", "我的任务"),
    ("nav_dispatch", "派工"),
    ("nav_parts", "备件"),
    ("language", "语言"),
    ("fleet_title", "设备总览"),
    ("device", "设备"),
    ("serial", "序列号"),
    ("model", "型号"),
    ("batch", "批次"),
    ("site", "站点"),
    ("region", "区域"),
    ("health", "健康状态"),
    ("healthy", "正常"),
    ("watch", "关注"),
    ("alerting", "告警中"),
    ("open_alerts", "活动告警"),
    ("open_tickets", "未结工单"),
    ("rul", "剩余寿命"),
    ("rul_interval", "剩余寿命（区间）"),
    ("hours", "小时"),
    ("filter", "筛选"),
    ("all", "全部"),
    ("devices_shown", "台设备"),
    ("sites_map", "站点分布"),
    ("identity", "设备档案"),
    ("firmware", "固件"),
    ("install_date", "安装日期"),
    ("warranty_end", "保修截止"),
    ("customer", "客户"),
    ("criticality", "关键程度"),
    ("telemetry", "遥测数据"),
    ("range", "时间范围"),
    ("metrics", "指标"),
    ("show", "显示"),
    ("no_data", "此时间范围内没有数据。"),
    ("no_telemetry_access", "您的角色无权查看遥测数据。"),
    ("points", "个数据点"),
    ("alert_history", "告警历史"),
    ("tickets", "工单"),
    ("alerts_title", "告警"),
    ("acknowledge", "确认"),
    ("analytics_title", "可靠性分析"),
    ("nav_analytics", "分析"),
    ("group_by", "分组"),
    ("weibull_title", "威布尔概率图（全机队）"),
    ("mtbf_title", "平均故障间隔与平均修复时间"),
    ("heatmap_title", "按区域和故障模式的故障"),
    ("batches_title", "缺陷批次"),
    ("surges_title", "故障激增告警"),
    ("kpi_title", "服务商绩效"),
    ("accuracy_title", "模型准确率"),
    ("no_failures", "暂无可绘制的故障。"),
    ("life_days", "寿命（天，对数刻度）；纵轴：累计失效百分比"),
    ("group", "分组"),
    ("devices", "设备"),
    ("failures", "故障"),
    ("suspensions", "截尾"),
    ("mean_life_days", "平均寿命（天）"),
    ("availability", "可用率"),
    ("failures_per_device_year", "每设备年故障数"),
    ("heatmap_note", "颜色越深：该区域每设备年的故障越多。"),
    ("flagged", "已标记"),
    ("recall_devices", "台设备在召回清单上"),
    ("download_csv", "下载 CSV"),
    ("no_surges", "未出现故障激增。"),
    ("week_of", "周起始"),
    ("baseline_per_week", "基线 / 周"),
    ("provider", "服务商"),
    ("first_time_fix", "一次修复率"),
    ("sla_compliance", "SLA 达成"),
    ("satisfaction", "满意度"),
    ("parts_turnover", "备件周转 / 年"),
    ("predictive_tickets", "预测性工单"),
    ("precision", "精确率"),
    ("recall", "召回率"),
    ("confirmed", "确认"),
    ("false_alarms", "误报"),
    ("other_cause", "其他原因"),
    ("lead_days", "提前期（天）"),
    ("dispatch_title", "派工看板"),
    ("dispatch_result", "派工结果"),
    ("waiting_tickets", "待派工单"),
    ("nothing_to_dispatch", "没有待派的新建或已分诊工单。"),
    ("dispatch_selected", "派发所选"),
    ("select_tickets", "请至少选择一个工单。"),
    ("technicians", "工程师"),
    ("load", "在办工单 / 每日容量"),
    ("skills", "技能"),
    ("home", "常驻地"),
    ("inactive", "停用"),
    ("assigned_n", "已派"),
    ("unassigned_n", "未派"),
    ("parts", "备件"),
    ("part_van", "车载库存"),
    ("part_transfer", "调拨"),
    ("part_reserved", "已预留"),
    ("part_unavailable", "无货"),
    ("resolve", "解除"),
    ("failure_mode", "故障模式"),
    ("state", "状态"),
    ("severity", "严重程度"),
    ("opened", "发生时间"),
    ("evidence", "证据"),
    ("score", "评分"),
    ("ratio", "× 限值"),
    ("ticket", "工单"),
    ("none", "无"),
    ("tickets_title", "工单"),
    ("board_title", "工单看板"),
    ("queue", "队列"),
    ("board", "看板"),
    ("priority", "优先级"),
    ("title", "标题"),
    ("technician", "技术员"),
    ("sla", "服务时限"),
    ("sla_left", "剩余"),
    ("sla_overdue", "已超时"),
    ("sla_paused", "已暂停"),
    ("sla_stopped", "已停止"),
    ("sla_met", "已达成"),
    ("created", "创建时间"),
    ("timeline", "时间线"),
    ("actions", "操作"),
    ("move_to", "转为"),
    ("note", "备注"),
    ("assign", "指派"),
    ("candidates", "候选技术员"),
    ("close_report", "填写服务报告并关闭"),
    ("cause", "原因"),
    ("fix", "处理措施"),
    ("parts_used", "使用的备件（编号、数量）"),
    ("signed_off_by", "签字人"),
    ("close_code", "关闭代码"),
    ("close", "关闭工单"),
    ("parts_needed", "所需备件"),
    ("reservations", "已预留备件"),
    ("description", "描述"),
    ("forbidden", "禁止访问"),
    ("forbidden_text", "您无权打开此页面（或页面不存在）。"),
    ("not_found", "未找到"),
    ("not_found_text", "这里什么都没有。"),
    ("error", "错误"),
    (
        "csrf_failed",
        "表单已过期或并非来自本控制台。请刷新后重试。",
    ),
    ("done", "已完成。"),
    ("track_title", "您的服务请求"),
    ("track_code", "查询码"),
    ("track_state", "状态"),
    ("track_assigned", "已指派技术员。"),
    ("track_unassigned", "尚未指派技术员。"),
    ("track_visit_by", "预计上门时间"),
    ("rate_title", "请为我们的服务评分"),
    ("rate_send", "提交评分"),
    ("rate_thanks", "感谢您的评分。"),
    ("rate_followup", "非常抱歉，我们已安排回访。"),
    ("rate_comment", "留言（可选，请勿填写个人信息）"),
    ("jobs_title", "我的任务"),
    ("no_jobs", "没有未完成的任务。"),
    ("navigate", "导航"),
    ("open_ticket", "打开"),
    ("st_new", "新建"),
    ("st_triaged", "已分诊"),
    ("st_assigned", "已指派"),
    ("st_en_route", "在途"),
    ("st_on_site", "现场处理"),
    ("st_waiting_parts", "等待备件"),
    ("st_resolved", "已解决"),
    ("st_closed", "已关闭"),
    ("st_cancelled", "已取消"),
];

/// The table key of a ticket state's label.
pub fn state_key(state: &str) -> &'static str {
    match state {
        "new" => "st_new",
        "triaged" => "st_triaged",
        "assigned" => "st_assigned",
        "en_route" => "st_en_route",
        "on_site" => "st_on_site",
        "waiting_parts" => "st_waiting_parts",
        "resolved" => "st_resolved",
        "closed" => "st_closed",
        "cancelled" => "st_cancelled",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tables_have_the_same_keys() {
        let keys = |t: &'static [(&'static str, &'static str)]| {
            let mut k: Vec<&str> = t.iter().map(|(k, _)| *k).collect();
            k.sort_unstable();
            k
        };
        let en = keys(EN);
        assert_eq!(en, keys(ZH));
        let mut dedup = en.clone();
        dedup.dedup();
        assert_eq!(en.len(), dedup.len(), "a key appears twice");
    }

    #[test]
    fn lookup_and_accept_language() {
        assert_eq!(Lang::Zh.t("sign_in"), "登录");
        assert_eq!(Lang::En.t("sign_in"), "Sign in");
        assert_eq!(Lang::from_accept("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(Lang::from_accept("de-DE, en;q=0.5"), Lang::En);
    }
}
